package server

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/cohortfl/cohort/job"
)

// fallbackMaxModelBytes is [DefaultMaxModelBytes] where the machine's
// memory is unknown.
const fallbackMaxModelBytes = 4 << 30

// DefaultMaxModelBytes is the default [Config.MaxModelBytes]: a quarter
// of the machine's physical memory (MemTotal in /proc/meminfo), or 4 GiB
// where that cannot be read.
var DefaultMaxModelBytes = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return fallbackMaxModelBytes
	}
	if total := memTotal(b); total > 0 {
		return total / 4
	}
	return fallbackMaxModelBytes
})

// memTotal returns MemTotal of a /proc/meminfo, in bytes; 0 if absent.
func memTotal(meminfo []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kb, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil || kb <= 0 {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cnnHidden is the width of the built-in cnn's first dense layer
// (train's cnn).
const cnnHidden = 512

// specParams returns the number of parameters of a job's built-in model,
// computed from its spec without building it, and false where the spec
// does not tell (an exec model, a dataset the coordinator does not know).
// The shapes follow the coordinator's datasets (fashion-mnist: 1×28×28
// images, 10 classes; synthetic: data.synthetic.dim features and
// .classes) and the built-in trainers' layers: logreg and mlp are dense
// layers with biases; cnn is 5×5 same-padded convolutions each followed by
// a 2×2 max-pool, then dense layers of 512 and the classes. A transfer
// model has model.params parameters.
func specParams(spec *job.Spec) (int64, bool) {
	if spec.Model.Kind == job.ModelTransfer {
		return spec.Model.Params, spec.Model.Params > 0
	}
	var shape []int
	var classes int
	switch spec.Data.Dataset {
	case job.DatasetFashionMNIST:
		shape, classes = []int{1, 28, 28}, 10
	case job.DatasetSynthetic:
		shape, classes = []int{spec.Data.Synthetic.Dim}, spec.Data.Synthetic.Classes
	default:
		return 0, false
	}
	in := int64(1)
	for _, d := range shape {
		in *= int64(d)
	}
	dense := func(in int64, widths []int) int64 {
		var n int64
		for _, w := range widths {
			n += in*int64(w) + int64(w)
			in = int64(w)
		}
		return n
	}
	switch spec.Model.Kind {
	case job.ModelLogReg:
		return dense(in, []int{classes}), true
	case job.ModelMLP:
		return dense(in, append(append([]int(nil), spec.Model.Hidden...), classes)), true
	case job.ModelCNN:
		if len(shape) != 3 {
			return 0, false
		}
		ch, h, w := int64(shape[0]), int64(shape[1]), int64(shape[2])
		var n int64
		for _, out := range spec.Model.Conv {
			n += int64(out)*ch*5*5 + int64(out)
			ch, h, w = int64(out), h/2, w/2
		}
		return n + dense(ch*h*w, []int{cnnHidden, classes}), true
	}
	return 0, false
}

// checkModelSize refuses a job whose models the coordinator could not
// hold within max bytes: what its most demanding arm keeps of a model of
// the job's parameters, as float32s. A FedAvg-family arm keeps the sum
// and the global model (the latter on disk for a large model in a
// deployment: the limit does not count on it), a server optimizer adds
// its two moments; a robust rule (median, trimmed mean, Krum) keeps the
// global model and the next one, reading the sites' updates from their
// files a block at a time.
func checkModelSize(spec *job.Spec, max int64) error {
	params, ok := specParams(spec)
	if !ok || max <= 0 {
		return nil
	}
	copies, why := int64(2), "the global model and the next one"
	for _, a := range spec.Arms {
		if a.Strategy == nil {
			continue
		}
		switch a.Strategy.Name {
		case "fedadam", "fedyogi", "fedadagrad", "fedavgm":
			copies, why = 4, "the sum, the global model and the server optimizer's two moments ("+a.Strategy.Name+")"
		}
	}
	need := params * copies * 4
	if need/copies/4 != params || need > max { // overflow, or over the limit
		return badInput("model: %s parameters × %d (%s) × 4 bytes = %s, over this coordinator's limit of %s; use a smaller model (model.hidden, model.conv, model.params), a strategy that keeps fewer, or raise coordinator.max_model_bytes",
			groupDigits(params), copies, why, byteSize(need), byteSize(max))
	}
	return nil
}

// groupDigits writes n with thousands separators: 984,001,205.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// byteSize writes n bytes in binary units: "11.0 GiB".
func byteSize(n int64) string {
	const unit = 1 << 10
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	f, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"} {
		f /= unit
		suffix = s
		if f < unit {
			break
		}
	}
	return fmt.Sprintf("%.1f %s (%d bytes)", f, suffix, n)
}
