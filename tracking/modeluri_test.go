package tracking

import (
	"errors"
	"testing"
)

func TestParseModelURI(t *testing.T) {
	tests := []struct {
		uri  string
		want ModelURI
		bad  bool
	}{
		{uri: "models:/fmnist/3", want: ModelURI{Name: "fmnist", Version: "3"}},
		{uri: "models:/fmnist@champion", want: ModelURI{Name: "fmnist", Alias: "champion"}},
		{uri: "models:/a@b@champion", want: ModelURI{Name: "a@b", Alias: "champion"}},
		{uri: "models:/fmnist/latest", want: ModelURI{Name: "fmnist", Latest: true}},
		{uri: "models:/fmnist/production", want: ModelURI{Name: "fmnist", Stage: StageProduction}},
		{uri: "models:/fmnist", bad: true},
		{uri: "models:/fmnist@", bad: true},
		{uri: "models:/fmnist/", bad: true},
		{uri: "models:/fmnist/1/2", bad: true},
		{uri: "models:/fmnist/shiny", bad: true},
		{uri: "models://host/fmnist/1", bad: true},
		{uri: "runs:/abc/model", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseModelURI(tt.uri)
		if tt.bad {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseModelURI(%q) = %+v, %v; want ErrInvalid", tt.uri, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseModelURI(%q) = %+v, %v; want %+v", tt.uri, got, err, tt.want)
		}
	}
}
