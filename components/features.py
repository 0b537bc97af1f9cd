"""Feature names shared by ingest, transform, trainer, evaluator and serving: defined once."""

# Raw tf.Example features written by ingest.
IMAGE_KEY = "image"            # encoded bytes exactly as stored on disk
LABEL_KEY = "label"            # int64 id: index of the class name in sorted order
LABEL_NAME_KEY = "label_name"
PATH_KEY = "relative_path"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
CHANNELS_KEY = "channels"
FORMAT_KEY = "format"
SHA256_KEY = "sha256"
EXIF_ORIENTATION_KEY = "exif_orientation"  # 1-8 as stored, 0 when absent: recorded, not applied

# Transformed features written by transform.
PIXELS_KEY = "pixels_u8"       # serialized uint8 [S, S, 3] tensor at the storage size
CHANNEL_MEAN_KEY = "channel_mean"  # per-channel mean from the TFT full pass (train split)
CHANNEL_STD_KEY = "channel_std"

# Resize policies of Transform (`transform.resize`); the first is the default.
RESIZE_POLICIES = ("stretch", "crop", "pad")

# Transform asset holding the class names; sorted, it is the id -> name table.
LABEL_VOCABULARY = "label_names"

# Splits.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
TEST_SPLIT = "test"             # held out from tuning and training: only the Evaluator reads it

# Model outputs and signatures.
PROBABILITIES_KEY = "probabilities"
CLASS_ID_KEY = "class_id"
CLASS_NAME_KEY = "class_name"
CLASSES_KEY = "classes"        # every class name in id order, per row (top-k names for clients)
SERVING_SIGNATURE = "serving_default"     # raw image bytes in
SERVING_INPUT = "image_bytes"
EXAMPLES_SIGNATURE = "serving_examples"   # serialized tf.Example in (TFMA)
# TF Serving's Classify API: method name classify, one string input "inputs" (tf.Examples),
# outputs "classes" (every class name) and "scores" (their probabilities).
CLASSIFY_SIGNATURE = "classification"
CLASSIFY_INPUT = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"

# What the trainer records inside the SavedModel (class names, base, hyperparameters), so the
# pusher, the server and `compare` can describe a model without ML Metadata.
MODEL_INFO_FILE = "assets.extra/model_info.json"
# The Evaluator's verdict (gate, metrics, baseline) beside its evaluation, as data and as a page;
# the pusher copies the page into the pushed version.
VERDICT_JSON = "verdict.json"
VERDICT_HTML = "verdict.html"
# TF Serving replays these PredictionLog records before a version takes traffic.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

# Hyperparameter names: the tuner's output keys and the trainer's inputs.
HP_INPUT_SIZE = "input_size"
HP_LEARNING_RATE = "learning_rate"
HP_PHASE2_LEARNING_RATE = "phase2_learning_rate"
HP_DROPOUT = "dropout"

# Reports the tuner writes into its tuner_results artifact and the trainer into its model_run
# artifact; the run summary reads them without importing TensorFlow.
TRIALS_JSON = "trials.json"
TRIALS_PNG = "trials.png"
TRAINING_SUMMARY_FILE = "training_summary.json"
TRAINING_CURVES_FILE = "training_curves.png"
