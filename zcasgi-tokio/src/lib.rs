//! The tokio transport backend of zcasgi (in progress).
