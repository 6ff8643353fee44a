//! outlier (to be written).
