package train

import "fmt"

func newCNN(cfg Config) (Trainer, error) {
	return nil, fmt.Errorf("%w: the cnn model is not built yet; use mlp or logreg", ErrConfig)
}
