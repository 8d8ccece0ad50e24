"""MNIST on disk and in memory, images and drawings into MNIST form, Kaggle-format CSV files, the handwriting set, the dataset as the Data page shows it."""
