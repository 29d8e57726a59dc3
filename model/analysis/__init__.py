"""Layer 4, analysis: offline evaluation and reports (baselines, interpretation, drift, EDA,
quality) and the results block of the docs."""
