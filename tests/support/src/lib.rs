//! Test support for scour's integration scenarios (`tests/*.rs`).

pub mod cgroup;
pub mod clock;
pub mod cluster;
pub mod containerd;
pub mod control_plane;
pub mod debian;
pub mod fake_cri;
pub mod fake_trivy;
pub mod gate;
pub mod guests;
pub mod helm;
pub mod images;
pub mod kubelet;
pub mod nodes;
pub mod oci_push;
pub mod registry;
pub mod scenario;
pub mod trivy_server;
pub mod trivydb;
