//! Event Grid / CloudEvents parsing. STUB: the intake helper replaces this file.
