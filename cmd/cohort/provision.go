package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cohortfl/cohort/deploy"
)

// provisionCmd is `cohort provision [-o DIR] project.yaml`: the project's CA
// and startup kits. DIR defaults to <project name>-kits in the project
// file's folder, so that re-running it from anywhere finds the same CA and
// kits.
func provisionCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output folder (default: <project name>-kits next to the project file)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort provision [-o DIR] project.yaml")
		fmt.Fprintln(fs.Output(), "Makes the project's CA and a startup kit per coordinator, site and admin; re-run it after adding")
		fmt.Fprintln(fs.Output(), "one to project.yaml: the CA and existing kits are kept, new kits written.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("provision takes one project file, got %d arguments", fs.NArg())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path := fs.Arg(0)
	p, err := deploy.LoadProject(path)
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join(filepath.Dir(path), p.Name+"-kits")
	}
	res, err := deploy.Provision(p, dir, time.Now())
	if err != nil {
		return err
	}
	if res.CACreated {
		fmt.Fprintf(stdout, "CA          created  %s  (keep ca.key private and backed up: every kit is signed with it)\n", res.CADir)
	} else {
		fmt.Fprintf(stdout, "CA          re-used  %s\n", res.CADir)
	}
	var written int
	for _, k := range res.Kits {
		what := "kept   "
		if k.Written {
			what = "written"
			written++
		}
		role := map[string]string{deploy.RoleCoordinator: "coordinator", deploy.RoleSite: "site", deploy.RoleAdmin: "admin"}[k.Role]
		fmt.Fprintf(stdout, "%-11s %s  %s  (valid until %s)\n", role+" "+k.Name, what, k.Dir, k.NotAfter.UTC().Format("2006-01-02"))
		if k.Written {
			fmt.Fprintf(stdout, "            next: copy the folder to its machine and, in it, run: %s\n", k.Next)
		}
	}
	fmt.Fprintf(stdout, "%d kits written, %d kept, in %s\n", written, len(res.Kits)-written, res.Dir)
	return nil
}
