//! Fake ARM. STUB: the fake-ARM helper replaces this file (it may become a folder).
