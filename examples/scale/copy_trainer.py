# A stdlib-only exec trainer for memory measurements: init writes one
# tensor of $PARAMS float32s; train copies the model it is given.
import array, json, os, shutil, struct
task = json.load(open(os.environ["COHORT_TASK"]))
if task["kind"] == "init":
    p = int(os.environ["PARAMS"])
    h = json.dumps({"w": {"dtype": "F32", "shape": [p], "data_offsets": [0, 4 * p]}}).encode()
    h += b" " * (-len(h) % 8)
    chunk = array.array("f", [0.01]) * (1 << 20)
    with open(task["weights_out"], "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = p
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n].tobytes())
            left -= n
    m = {}
else:
    shutil.copyfile(task["weights_in"], task["weights_out"])
    m = {"train_loss": 0.0}
json.dump(m, open(task["metrics_out"], "w"))
