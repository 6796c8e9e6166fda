//! End-to-end tests of Seam's binaries: arrive in a following commit.
