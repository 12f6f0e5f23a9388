"""Datasets: read the user's data (``sources``), turn it into seeded, stratified, scaled train/val/test splits and
the input specification that travels with them (``splits``), and feed stored samples to a model (``batches``).

Raw data of any source is held in one canonical layout: images (n, C, H, W), feature vectors (n, F), with the
source's own values and dtype. Preprocessing scales values and keeps everything else as it is: finding bad values is
the job of the data-quality gates, which must see them. Only numpy is imported here (scikit-learn and Pillow inside
the functions that need them).
"""

from compression_pipeline.data.batches import as_images, feed
from compression_pipeline.data.files import content_bytes, content_version, read_npz, to_npz_bytes
from compression_pipeline.data.sources import BUILTIN_ROWS, RawData, file_under, load_raw, source_path
from compression_pipeline.data.splits import SPLITS, known_test_rows, preprocess, value_max

__all__ = ["BUILTIN_ROWS", "SPLITS", "RawData", "as_images", "content_bytes", "content_version", "feed", "file_under",
           "known_test_rows", "load_raw", "preprocess", "read_npz", "source_path", "to_npz_bytes", "value_max"]
