package data

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// FashionMNISTURL is the dataset's official address (Zalando Research),
// serving the four .gz files.
const FashionMNISTURL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

// fashionMNISTMD5 are the official .gz files' MD5 sums, as published in
// the zalandoresearch/fashion-mnist README. (Debian's package recompresses
// the files, so its .gz files have other sums and the same contents.)
var fashionMNISTMD5 = map[string]string{
	"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
	"train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
	"t10k-images-idx3-ubyte.gz":  "bef4ecab320f06d8554ea6380940ec79",
	"t10k-labels-idx1-ubyte.gz":  "bb300cfdad3c16e7a12a480ee83cd310",
}

const (
	// maxDownload bounds one downloaded file (the largest is 26 MB).
	maxDownload = 64 << 20
	// downloadTimeout bounds one file's download with the default client.
	downloadTimeout = 10 * time.Minute
)

// downloadFashionMNIST fetches the four files from baseURL into dir,
// checking each one's MD5 against sums and writing it under a temporary
// name renamed into place, so dir never holds a partial or corrupt file.
// Files already there with the right MD5 are kept.
func downloadFashionMNIST(ctx context.Context, client *http.Client, baseURL, dir string, sums map[string]string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the cache folder: %w", err)
	}
	for _, file := range gzNames() {
		dst := filepath.Join(dir, file)
		want := sums[file]
		if got, err := fileMD5(dst); err == nil && got == want {
			continue
		}
		u, err := url.JoinPath(baseURL, file)
		if err != nil {
			return fmt.Errorf("downloading %s: %w", file, err)
		}
		if err := fetchChecked(ctx, client, u, dst, want, log); err != nil {
			return err
		}
	}
	return nil
}

// fetchChecked downloads url to dst through a temporary file in dst's
// folder, renamed into place only when its MD5 is wantMD5.
func fetchChecked(ctx context.Context, client *http.Client, url, dst, wantMD5 string, log *slog.Logger) error {
	start := time.Now()
	log.Info("fashion_mnist_downloading", "url", url, "to", dst)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // a *url.Error: it names the method and address
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("downloading %s: HTTP %s", url, resp.Status)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.part")
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, maxDownload+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	if n > maxDownload {
		return fmt.Errorf("downloading %s: %w: more than %d bytes, which no Fashion-MNIST file is", url, ErrChecksum, maxDownload)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantMD5 {
		return fmt.Errorf("downloading %s: %w: MD5 %s, want %s: the file is corrupt or not the official one", url, ErrChecksum, got, wantMD5)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("downloading %s: %w", url, err)
	}
	log.Info("fashion_mnist_downloaded", "url", url, "bytes", n, "seconds", time.Since(start).Seconds())
	return nil
}

// fileMD5 returns the hex MD5 of the file at path.
func fileMD5(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
