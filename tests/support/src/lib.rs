//! Test support for scour's integration scenarios (`tests/*.rs`).

pub mod containerd;
pub mod fake_cri;
pub mod fake_trivy;
pub mod gate;
pub mod guests;
pub mod images;
pub mod nodes;
pub mod scenario;
pub mod trivydb;
