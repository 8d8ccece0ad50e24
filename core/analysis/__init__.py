"""What the lab says of finished runs: metrics, saved predictions, ensembles, label issues, saliency, embedding maps, predicting new images."""
