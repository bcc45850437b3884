//! The `onestream` package owns the end-to-end suite in `tests/`; the tools
//! live in the `os-*` crates and their library in `os-core`.
