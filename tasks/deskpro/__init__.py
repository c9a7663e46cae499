"""DeSKPro stages: face teacher, student / two-stream training, evaluation, the Table 3 ablation."""
