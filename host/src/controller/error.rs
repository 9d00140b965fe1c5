/// What can stop the controller from planning or progressing a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The config ConfigMap is missing a key or holds an invalid config; the
    /// message carries the field path.
    #[error("ConfigMap {config_map}: {message}")]
    Config { config_map: String, message: String },
    /// A user or system exclusion ConfigMap is malformed; the run fails closed.
    #[error("exclusion ConfigMap {name}: {message}")]
    Exclusions { name: String, message: String },
    #[error("ConfigMap {name}: {message}")]
    State { name: String, message: String },
    /// The registry policy was refused and no earlier one passed; the run
    /// fails closed.
    #[error("{0}")]
    Policy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API's HTTP status for an error, if it is an API error.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
