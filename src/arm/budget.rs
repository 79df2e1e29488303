//! Client-side token buckets mirroring ARM's throttling.
//! STUB: the ARM-client helper replaces this file.
