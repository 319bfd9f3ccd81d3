package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
)

// parseFlags parses args into fs as users expect of a command line: flags
// may come before, between and after the positional arguments (`cohort run
// job.yaml --db x`), and "--" ends the flags (what follows is positional,
// even if it starts with "-"). Afterwards fs.Args() holds the positional
// arguments in order.
//
// On -h, -help or --help the command's usage goes to stdout and the error
// is [flag.ErrHelp], which main turns into exit status 0. Any other error
// has printed the usage to fs's own output (stderr), as flag does.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	defer fs.SetOutput(out)

	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			_, werr := stdout.Write(buf.Bytes())
			return errors.Join(err, werr)
		}
		if err != nil {
			_, _ = out.Write(buf.Bytes())
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// flag consumed "--" when the argument before rest is one (and not
		// the value of a flag, which would have been consumed with it).
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && !isFlagValue(fs, args[:used-1]) {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Leave exactly the positional arguments in fs.Args().
	return fs.Parse(append([]string{"--"}, positional...))
}

// isFlagValue reports whether the argument after before would be the value
// of a flag (before ends with "-name" of a non-boolean flag written without
// "=").
func isFlagValue(fs *flag.FlagSet, before []string) bool {
	if len(before) == 0 {
		return false
	}
	last := before[len(before)-1]
	name := last
	for range 2 {
		if len(name) > 0 && name[0] == '-' {
			name = name[1:]
		}
	}
	if name == last || name == "" || bytes.ContainsRune([]byte(name), '=') {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}
