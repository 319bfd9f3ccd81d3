package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// registry is what `cohort models` needs of a tracking store's model
// registry: the embedded SQLite store or an MLflow server.
type registry interface {
	SearchRegisteredModels(ctx context.Context, q tracking.RegistryQuery) ([]tracking.RegisteredModel, string, error)
	GetRegisteredModel(ctx context.Context, name string) (tracking.RegisteredModel, error)
	SearchModelVersions(ctx context.Context, q tracking.RegistryQuery) ([]tracking.ModelVersion, string, error)
	// ResolveModelURI finds the version models:/NAME/VERSION,
	// models:/NAME@ALIAS, models:/NAME/STAGE or models:/NAME/latest names.
	ResolveModelURI(ctx context.Context, uri string) (tracking.ModelVersion, error)
	SetRegisteredModelAlias(ctx context.Context, name, alias, version string) error
	DeleteRegisteredModelAlias(ctx context.Context, name, alias string) error
}

// modelStore is a registry that can also fetch a version's files.
type modelStore interface {
	registry
	// download copies the files of version mv into dir.
	download(ctx context.Context, mv tracking.ModelVersion, dir string) error
	Close() error
}

const modelsUsage = `Usage:
  cohort models list     [--tracking URI] [--filter "name LIKE 'fmnist%'"]
  cohort models show     [--tracking URI] NAME | models:/NAME/VERSION | models:/NAME@ALIAS | models:/NAME/latest
  cohort models alias    [--tracking URI] [--delete] NAME ALIAS [VERSION]
  cohort models download [--tracking URI] [--out DIR] models:/NAME/VERSION | models:/NAME@ALIAS | models:/NAME/latest

--tracking is sqlite:FILE (default sqlite:cohort.db) or the http(s):// address of an
MLflow server or 'cohort ui' (credentials as MLflow's: MLFLOW_TRACKING_USERNAME/PASSWORD
or MLFLOW_TRACKING_TOKEN).
`

// modelsCmd lists, shows, aliases and downloads registered models.
func modelsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, modelsUsage)
		return flag.ErrHelp
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, modelsUsage)
		return errors.New("models: name a sub-command: list, show, alias or download")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("models "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), modelsUsage); fs.PrintDefaults() }
	uri := fs.String("tracking", "sqlite:cohort.db", "the tracking store: sqlite:FILE or http(s)://HOST")
	filter := fs.String("filter", "", "list: an MLflow registry filter")
	del := fs.Bool("delete", false, "alias: remove the alias instead of setting it")
	out := fs.String("out", "", "download: the folder to write the model into (default: NAME-VERSION)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	var want int
	switch sub {
	case "list":
		want = 0
	case "show", "download":
		want = 1
	case "alias":
		want = 3
		if *del {
			want = 2
		}
	default:
		fmt.Fprint(stderr, modelsUsage)
		return fmt.Errorf("models: unknown sub-command %q; use list, show, alias or download", sub)
	}
	if fs.NArg() != want {
		fs.Usage()
		return fmt.Errorf("models %s takes %d argument(s), got %d", sub, want, fs.NArg())
	}
	st, err := openModelStore(ctx, *uri)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "list":
		return listModels(ctx, st, *filter, stdout)
	case "show":
		return showModel(ctx, st, fs.Arg(0), stdout)
	case "alias":
		name, alias := fs.Arg(0), fs.Arg(1)
		if *del {
			if err := st.DeleteRegisteredModelAlias(ctx, name, alias); err != nil {
				return err // the store's error names the model and the alias
			}
			fmt.Fprintf(stdout, "removed alias %s of %s\n", alias, name)
			return nil
		}
		if err := st.SetRegisteredModelAlias(ctx, name, alias, fs.Arg(2)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "models:/%s@%s → version %s\n", name, alias, fs.Arg(2))
		return nil
	default: // download
		mv, err := st.ResolveModelURI(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		dir := *out
		if dir == "" {
			dir = mv.Name + "-" + mv.Version
		}
		if err := st.download(ctx, mv, dir); err != nil {
			return fmt.Errorf("downloading models:/%s/%s: %w", mv.Name, mv.Version, err)
		}
		fmt.Fprintf(stdout, "models:/%s/%s → %s\n", mv.Name, mv.Version, dir)
		return nil
	}
}

func listModels(ctx context.Context, r registry, filter string, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLATEST\tALIASES\tUPDATED\tDESCRIPTION")
	token := ""
	for {
		ms, next, err := r.SearchRegisteredModels(ctx, tracking.RegistryQuery{Filter: filter, OrderBy: []string{"name ASC"}, PageToken: token})
		if err != nil {
			return fmt.Errorf("listing registered models: %w", err)
		}
		for _, m := range ms {
			latest := "-"
			for _, v := range m.LatestVersions {
				if latest == "-" || versionLess(latest, v.Version) {
					latest = v.Version
				}
			}
			var as []string
			for _, a := range m.Aliases {
				as = append(as, a.Alias+"→"+a.Version)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, latest, orDash(strings.Join(as, ", ")),
				m.LastUpdatedTime.Local().Format(time.DateTime), orDash(firstLine(m.Description, 60)))
		}
		if next == "" {
			break
		}
		token = next
	}
	return tw.Flush()
}

// versionLess orders version numbers numerically ("9" < "10").
func versionLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// showModel prints a registered model and its versions, or one version.
func showModel(ctx context.Context, r registry, arg string, w io.Writer) error {
	if strings.HasPrefix(arg, "models:/") {
		mv, err := r.ResolveModelURI(ctx, arg)
		if err != nil {
			return err
		}
		printVersion(w, mv)
		return nil
	}
	m, err := r.GetRegisteredModel(ctx, arg)
	if err != nil {
		return fmt.Errorf("registered model %q: %w", arg, err)
	}
	fmt.Fprintf(w, "model        %s\n", m.Name)
	if m.Description != "" {
		fmt.Fprintf(w, "description  %s\n", m.Description)
	}
	for _, a := range m.Aliases {
		fmt.Fprintf(w, "alias        %s → version %s\n", a.Alias, a.Version)
	}
	for _, t := range m.Tags {
		fmt.Fprintf(w, "tag          %s = %s\n", t.Key, t.Value)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nVERSION\tALIASES\tARM\tACCURACY\tENERGY J\tACC/kJ\tCREATED\tRUN")
	token := ""
	filter := fmt.Sprintf("name = '%s'", strings.ReplaceAll(m.Name, "'", `\'`))
	for {
		vs, next, err := r.SearchModelVersions(ctx, tracking.RegistryQuery{Filter: filter, OrderBy: []string{"version_number ASC"}, PageToken: token})
		if err != nil {
			return fmt.Errorf("versions of %q: %w", m.Name, err)
		}
		for _, v := range vs {
			tag := tagsOf(v.Tags)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Version, orDash(strings.Join(v.Aliases, ", ")),
				orDash(tag["cohort.arm"]), orDash(tag["cohort.final_accuracy"]), orDash(tag["cohort.energy_joules"]),
				orDash(tag["cohort.accuracy_per_kj"]), v.CreationTime.Local().Format(time.DateTime), orDash(v.RunID))
		}
		if next == "" {
			break
		}
		token = next
	}
	return tw.Flush()
}

func tagsOf(ts []tracking.Tag) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[t.Key] = t.Value
	}
	return m
}

func printVersion(w io.Writer, v tracking.ModelVersion) {
	fmt.Fprintf(w, "model    %s\nversion  %s\n", v.Name, v.Version)
	if len(v.Aliases) > 0 {
		fmt.Fprintf(w, "aliases  %s\n", strings.Join(v.Aliases, ", "))
	}
	fmt.Fprintf(w, "stage    %s\nstatus   %s\ncreated  %s\nsource   %s\nrun      %s\n",
		orDash(v.CurrentStage), orDash(v.Status), v.CreationTime.Local().Format(time.DateTime), v.Source, orDash(v.RunID))
	if v.Description != "" {
		fmt.Fprintf(w, "about    %s\n", v.Description)
	}
	for _, t := range v.Tags {
		fmt.Fprintf(w, "tag      %s = %s\n", t.Key, t.Value)
	}
}

// openModelStore opens the registry behind a tracking URI.
func openModelStore(ctx context.Context, uri string) (modelStore, error) {
	scheme, rest, _ := strings.Cut(uri, ":")
	switch strings.ToLower(scheme) {
	case "sqlite":
		file := strings.TrimPrefix(rest, "//")
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("tracking database %s: %w; name it with --tracking sqlite:FILE", file, err)
		}
		st, err := tracking.OpenSQLite(ctx, file)
		if err != nil {
			return nil, fmt.Errorf("opening tracking store %s: %w", file, err)
		}
		return sqliteModels{st}, nil
	case "http", "https":
		return openRemoteModels(ctx, uri)
	}
	return nil, fmt.Errorf("--tracking %q: use sqlite:FILE or the http(s):// address of an MLflow server", uri)
}

// sqliteModels is the embedded store's registry; a version's files are its
// run's artifacts.
type sqliteModels struct{ *tracking.SQLiteStore }

func (s sqliteModels) download(ctx context.Context, mv tracking.ModelVersion, dir string) error {
	if mv.RunID == "" {
		return fmt.Errorf("the version's source %s belongs to no run; copy it from there", mv.Source)
	}
	run, err := s.GetRun(ctx, mv.RunID)
	if err != nil {
		return fmt.Errorf("the version's run %s: %w", mv.RunID, err)
	}
	rel, ok := strings.CutPrefix(mv.Source, strings.TrimSuffix(run.Info.ArtifactURI, "/")+"/")
	if !ok {
		if r, ok2 := strings.CutPrefix(mv.Source, "runs:/"+mv.RunID+"/"); ok2 {
			rel, ok = r, true
		}
	}
	if !ok {
		return fmt.Errorf("the version's source %s is not in its run's artifacts (%s); copy it from there", mv.Source, run.Info.ArtifactURI)
	}
	return copyRunArtifacts(ctx, s.SQLiteStore, mv.RunID, rel, dir)
}

// copyRunArtifacts copies the artifact folder rel of a run into dir.
func copyRunArtifacts(ctx context.Context, s *tracking.SQLiteStore, runID, rel, dir string) error {
	files, err := s.ListArtifacts(ctx, runID, rel)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("the run %s has no artifacts under %s", runID, rel)
	}
	for _, f := range files {
		name := path.Base(f.Path)
		if f.IsDir {
			if err := copyRunArtifacts(ctx, s, runID, f.Path, filepath.Join(dir, name)); err != nil {
				return err
			}
			continue
		}
		if err := copyArtifact(ctx, s, runID, f.Path, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func copyArtifact(ctx context.Context, s *tracking.SQLiteStore, runID, rel, dst string) error {
	r, err := s.OpenArtifact(ctx, runID, rel)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".download-*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("copying %s: %w", rel, err)
	}
	if err := errors.Join(tmp.Chmod(0o644), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
