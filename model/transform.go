package model

import (
	"fmt"
	"io"
)

// TransformSafetensors reads one safetensors file from r as
// [ScanSafetensors] does, with the same checks and errors, and writes to
// w, as it reads, the file [EncodeSafetensors] writes (with no metadata)
// for the weights r holds once f has changed their values: f gets each
// tensor's values a run at a time — tensor t's from index off, at most
// [ScanChunk], in data order — and changes them in place. An error from f
// ends it and is returned as is; one from w is wrapped. It returns the
// bytes written. Memory stays at one chunk whatever the model's size: a
// site that sends back a function of the model it receives holds neither.
func TransformSafetensors(w io.Writer, r io.Reader, limit int64, f func(t, off int, vals []float32) error) (int64, error) {
	cw := &countingWriter{w: w}
	_, err := ScanSafetensors(r, limit, func(shell *Weights) error {
		h, err := headerOf(shell.Tensors, nil)
		if err != nil {
			return err
		}
		if _, err := cw.Write(h); err != nil {
			return fmt.Errorf("encoding safetensors: writing the header: %w", err)
		}
		return nil
	}, func(t, off int, vals []float32) error {
		if err := f(t, off, vals); err != nil {
			return err
		}
		if err := WriteFloats(cw, vals); err != nil {
			return fmt.Errorf("encoding safetensors: writing tensor %d's values from %d: %w", t, off, err)
		}
		return nil
	})
	return cw.n, err
}
