"""Label aggregation and annotator agreement (pandas, numpy, krippendorff; no torch)."""
