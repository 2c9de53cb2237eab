"""The data floor: sample data, frame readers, clip datasets and the training loader."""
