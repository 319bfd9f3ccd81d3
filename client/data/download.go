package data

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// FashionMNISTURL is the dataset's official address.
const FashionMNISTURL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

// fashionMNISTMD5 are the official files' MD5 sums, as published by
// Zalando Research and checked by torchvision.
var fashionMNISTMD5 = map[string]string{
	"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
	"train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
	"t10k-images-idx3-ubyte.gz":  "bef4ecab320f06d8554ea6380940ec79",
	"t10k-labels-idx1-ubyte.gz":  "bb300cfdad3c16e7a12a480ee83cd310",
}

// maxDownload bounds one downloaded file (the largest is 26 MB).
const maxDownload = 64 << 20

// downloadFashionMNIST fetches the four files from baseURL into dir,
// checking each MD5 and writing each atomically.
func downloadFashionMNIST(ctx context.Context, client *http.Client, baseURL, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the cache folder: %w", err)
	}
	for _, name := range fmnistFiles {
		file := name + ".gz"
		if err := fetchChecked(ctx, client, baseURL+file, filepath.Join(dir, file), fashionMNISTMD5[file]); err != nil {
			return err
		}
	}
	return nil
}

func fetchChecked(ctx context.Context, client *http.Client, url, dst, wantMD5 string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("downloading %s: %s", url, resp.Status)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".download-*")
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	defer os.Remove(f.Name())
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, maxDownload+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	if n > maxDownload {
		return fmt.Errorf("downloading %s: larger than %d bytes; not the dataset", url, maxDownload)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantMD5 {
		return fmt.Errorf("downloading %s: MD5 %s, want %s; the file is corrupt or not the official one", url, got, wantMD5)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	return nil
}
