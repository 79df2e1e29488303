//! Custom-handler protocol. STUB: the intake helper replaces this file.
