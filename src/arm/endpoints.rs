//! Reading private endpoints from ARM (lead writes this).
