//! seam-proxy: arrives in a following commit.

fn main() {}
