"""Defaults of every command, in one commented place (CLI options override them)."""

from __future__ import annotations

# Model input (H, W). HC18 scans are mostly 800x540 (W x H): 256x384 keeps their 1.48 aspect ratio
# with little padding, and is divisible by 2**4 for a depth-4 U-Net.
IMAGE_SIZE = (256, 384)
# --image-size is refused above this side (px): a 20000x20000 input exhausted memory and the process was
# killed without a word
MAX_INPUT_SIDE_PX = 2048

# Segmentation U-Net: ~1.9 M parameters; trains at ~9 scans/s on 2 CPU cores at 256x384.
SEG_BASE_FILTERS = 16
SEG_DEPTH = 4

# Optimisation. AdamW with cosine decay and a short warm-up; weight decay as in Loshchilov & Hutter.
EPOCHS = 40
BATCH_SIZE = 8  # the GLOBAL batch: split evenly over replicas (see train.py)
LR = 2e-3  # for the global batch of 8; scaled linearly with the global batch (see train.py)
WEIGHT_DECAY = 1e-4
WARMUP_EPOCHS = 1
SEED = 42
VAL_FRACTION = 0.2  # of SUBJECTS, not images

# Training augmentation presets (``--augment``): 'standard' is what the first shipped models saw;
# 'robust' adds what users' scans look like: any rotation, captures in a screen, speckle, blur, JPEG,
# burnt-in calipers and text, and a wider range of head sizes (15-90 % of the image).
AUGMENT_PRESETS: dict[str, dict] = {
    "standard": {},
    "robust": {
        "scale_range": (0.6, 1.2),
        "gamma": (0.6, 1.6),  # machines' grey maps differ more than the standard preset allows
        "p_any_rotation": 0.2,  # 0.5 until round 3: turned frames are now squared back (region.find_tilt)
        "p_frame": 0.2,
        "p_speckle": 0.25,
        "p_blur": 0.2,
        "p_jpeg": 0.2,
        "p_burn": 0.2,
        "p_saturate": 0.2,  # added for the third fine-tuning round (docs/robustness.md)
    },
}

# Landmark heatmaps: Gaussian sigma in input pixels (at 256x384, 1 px ~ 0.25-0.5 mm).
HEATMAP_SIGMA_PX = 3.0

# Landmark network: the residual encoder with an upsampling head had the lowest point, BPD and OFD
# errors of the three architectures at equal training time (docs/landmarks.md), and is the fastest.
LANDMARK_ARCH = "resnet"

# Pixel sizes outside (0, MAX_PIXEL_SIZE_MM] are refused: ultrasound scans have 0.04-0.5 mm pixels; 5 mm
# per pixel would make a 300-pixel image 1.5 m wide.
MAX_PIXEL_SIZE_MM = 5.0
# and below MIN_PIXEL_SIZE_MM: a 2000-pixel image would be 1 cm wide (a size given in cm, 0.0068 for
# 0.068 mm, is just above it; its head then measures 10x too small and goes to review, below)
MIN_PIXEL_SIZE_MM = 0.005

# --- measuring (predict, evaluate, training validation, export checks) ---
PREDICT_BATCH = 8  # scans per engine call in predict / evaluate (--batch-size)
# segmentation: the skull's outline is the 0.5 level of the probability map
SEG_THRESHOLD = 0.5
# a "head" smaller than this fraction of the scan is no head (an error row, "no head found")
SEG_MIN_AREA_FRAC = 0.005
# flag low_confidence (review) when the mean probability inside the mask is below this: the net hesitates
SEG_LOW_CONFIDENCE = 0.75
# flag poor_fit (not a review reason on its own) when the RMS boundary residual exceeds this fraction of
# the semi-minor axis
SEG_POOR_FIT_RESIDUAL_FRAC = 0.02
# landmarks: a point confidence below this is low_confidence (review). A model's sidecar may carry its own,
# calibrated on its validation split (the shipped landmark model's: model.json low_point_confidence).
LM_LOW_POINT_CONFIDENCE = 0.3
# a scan (its ultrasound region) this much taller than wide is turned both ways and the views averaged; a
# near-square one is measured as it is (turning an upright scan costs more than a small lean)
PORTRAIT_RATIO = 1.2

# --- review: a row keeps its numbers but says a person must look (thresholds scale with the head) ---
# two methods' HC differing by more than this fraction of the head's HC (4 % of a 170 mm head = 7 mm)
REVIEW_DISAGREE_FRAC = 0.04
# a 90 % HC interval wider than this fraction of the HC. Chosen on the calibration half of the validation
# split (`tools/robustness.py tune-review`): from 0.08 to 0.12 the clean scans sent to review fell from
# 20 % to 14 % while the gross errors caught fell only from 50 % to 47 % (docs/robustness.md)
REVIEW_INTERVAL_FRAC = 0.12
# cephalic index (100 BPD / OFD) outside this range is not a head seen in a proper axial plane
# (Hadlock et al. 1981: 78.3 +/- 4.4 (SD); the range is about +/- 4 SD)
REVIEW_CEPHALIC_INDEX = (60.0, 96.0)
# an HC outside this range (mm) is no fetal head in a scan the models were made for, or the pixel size is
# wrong (in cm, or of another image): HC18's heads are 44-335 mm; 11 weeks is about 45 mm, 42 weeks about
# 360 mm, and the range leaves room for a macrocephalic head
REVIEW_HC_RANGE_MM = (30.0, 450.0)
# with --ga-csv: an HC this many SD from the INTERGROWTH-21st mean of its GA goes to review. Beyond 4 SD
# (under 1 in 15000 fetuses) a GA or pixel size that is not this scan's is likelier than the head, and a
# head that truly is so small or large needs a person anyway (a table keyed by name gave a 15-week head a
# 32.5-week GA: z -20, status ok)
REVIEW_GA_ZSCORE = 4.0

# --- a second look at small heads (fetalbio.pipeline.zoom_region) ---
# A head much smaller than the image is measured again in a crop around it, so that it fills the model
# input about as HC18's heads do: the crop is the box around both methods' first ellipses times this
# factor (the head then spans about 1/1.8 of the crop), widened to the model input's shape.
ZOOM_MARGIN = 1.8
# ... and only when that crop is smaller than this fraction of what the first look letterboxed (a gain of
# at least 1.12x in pixels per mm); larger heads are measured once.
ZOOM_MAX_AREA = 0.8

# Scans larger than this are refused from their header, before decoding (a 400 KB PNG can claim
# 20000x20000 pixels and 5 GB of memory). Ultrasound frames are at most ~2000 px a side.
MAX_SCAN_SIDE_PX = 10000
MAX_SCAN_PIXELS = 40_000_000

# Pixels that are not square (a DICOM PixelSpacing or ultrasound region whose x and y differ by more than
# this fraction) are resampled to square pixels before the models (fetalbio.preprocess.square_pixels),
# to at most this many pixels; results map back to the file's own pixels and are measured with its spacing.
ANISOTROPY_TOL = 0.01
MAX_SQUARED_PIXELS = 16_000_000

# Segmentation post-processing runs on a probability map of at most this many pixels a side, so that its
# cost is bounded whatever the scan's size (the model input is 256x384; HC18 scans are 800x540).
MAX_POSTPROCESS_SIDE_PX = 2048

# --- a PACS over DICOMweb (fetalbio.dicomweb) ---
# A server that says it is busy (HTTP 408, 429, 503, 504) is asked again, 0.5 s then 1 s later; a timeout
# or a refused connection is not (each try would wait the whole --timeout again).
DICOMWEB_BUSY_CODES = (408, 429, 503, 504)
DICOMWEB_BUSY_TRIES = 3
DICOMWEB_BUSY_WAIT_S = 0.5
