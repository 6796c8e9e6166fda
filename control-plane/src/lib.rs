//! seam-control-plane: arrives in a following commit.
