"""Video and image files: reference images checked and sized, a clip's last frame, segments joined into one MP4 (PyAV)."""
