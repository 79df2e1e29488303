//! The axum router the Functions host calls. (lead writes this)
