package strictyaml

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var (
	errInvalid = errors.New("invalid file")
	errSyntax  = errors.New("not valid YAML")
	errEmpty   = errors.New("file is empty")
	errLarge   = errors.New("file is too large")
)

func TestFormat(t *testing.T) {
	tests := []struct {
		file string
		at   Pos
		want string
	}{
		{"job.yaml", Pos{14, 3}, "job.yaml:14:3: m"},
		{"job.yaml", Pos{14, 0}, "job.yaml:14: m"},
		{"job.yaml", Pos{}, "job.yaml: m"},
		{"", Pos{14, 3}, "line 14, column 3: m"},
		{"", Pos{14, 0}, "line 14: m"},
		{"", Pos{}, "m"},
	}
	for _, tt := range tests {
		if got := Format(tt.file, tt.at, "m"); got != tt.want {
			t.Errorf("Format(%q, %v) = %q, want %q", tt.file, tt.at, got, tt.want)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"rounds", "batch_size", "lr"}
	syn := func(w string) string {
		if w == "learningrate" {
			return "lr"
		}
		return ""
	}
	for word, want := range map[string]string{
		"roudns": "rounds", "batchSize": "batch_size", "learning_rate": "lr", "zzz": "", strings.Repeat("a", 100): "",
	} {
		if got := Closest(word, keys, syn); got != want {
			t.Errorf("Closest(%q) = %q, want %q", word, got, want)
		}
	}
}

// decode runs a Decoder over data with a two-key schema.
func decode(file, data string, merge bool) (rounds int, name string, err error) {
	d := NewDecoder(Options{File: file, Invalid: errInvalid, Syntax: errSyntax, Empty: errEmpty, TooLarge: errLarge, MaxSize: 1 << 10, MergeKeys: merge, FreePrefix: "x-"})
	root, err := d.Document([]byte(data), "start from x.yaml")
	if err != nil {
		return 0, "", err
	}
	d.Mapping("", root, "{rounds: 1}", []Field{
		{Key: "rounds", Dec: func(p string, v *yaml.Node) { d.Int(p, v, &rounds) }},
		{Key: "name", Dec: func(p string, v *yaml.Node) { d.Str(p, v, &name) }},
	})
	if _, ok := d.Keys["name"]; !ok && name == "" {
		d.Check("name", "missing; name it")
	}
	return rounds, name, d.Err()
}

func TestDecoder(t *testing.T) {
	tests := []struct {
		data  string
		merge bool
		is    error
		want  string
	}{
		{"name: a\nroudns: 3\n", false, errInvalid, `job.yaml:2:1: unknown key "roudns" at the top level (did you mean "rounds"?)`},
		{"name: a\nrounds: ten\n", false, errInvalid, `job.yaml:2:9: rounds: "ten" is not an integer; write a whole number such as 10`},
		{"rounds: 1\n", false, errInvalid, "job.yaml: name: missing; name it"},
		{"name: a\nname: b\n", false, errInvalid, `job.yaml:2:1: duplicate key "name" at the top level (first at line 1); remove one`},
		{"x-a: &a {name: b}\n<<: *a\n", false, errInvalid, "merge keys (<<) are not supported here"},
		{"name: [a\n", false, errSyntax, "job.yaml:2: not valid YAML: did not find expected ',' or ']'"},
		{"", false, errEmpty, "job.yaml: file is empty; start from x.yaml"},
		{strings.Repeat("#", 2000), false, errLarge, "job.yaml: file is too large: more than 1024 bytes"},
		{"name: a\n---\nname: b\n", false, errInvalid, "job.yaml:2:1: a file holds one YAML document"},
	}
	for _, tt := range tests {
		_, _, err := decode("job.yaml", tt.data, tt.merge)
		if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("decode(%.20q) = %v, want %v containing %q", tt.data, err, tt.is, tt.want)
		}
	}
	// Merges, where allowed: explicit keys win over merged ones.
	rounds, name, err := decode("", "x-d: &d {rounds: 2, name: m}\n<<: *d\nname: own\n", true)
	if err != nil || rounds != 2 || name != "own" {
		t.Errorf("merge = %d, %q, %v; want 2, own, nil", rounds, name, err)
	}
}
