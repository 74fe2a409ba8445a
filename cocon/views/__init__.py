"""The views of a video, each stored in HDF5 shards: rgb frames, optical flow, pose, segmentation."""
