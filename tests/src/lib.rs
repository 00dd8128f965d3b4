//! Shared helpers for the cross-process tests in `tests/tests/`.
