"""`cpt demo`: the end-to-end demo (corpus from installed assets, every cpt command in order)."""
