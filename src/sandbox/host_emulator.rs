//! Functions host emulator. STUB: the intake helper replaces this file.
