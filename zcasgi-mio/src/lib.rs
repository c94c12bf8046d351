//! The mio transport backend of zcasgi (in progress).
