"""`edgepack tune`: search the build settings with the device in the loop (see `study.py`)."""
