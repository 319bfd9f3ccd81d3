package ui

import (
	"html/template"
	"net/url"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"value": formatValue,
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"indent": func(depth int) string { return strings.Repeat("\u00a0\u00a0\u00a0\u00a0", depth) },
	"short":  func(id string) string { return id[:min(8, len(id))] },
	// seg escapes one path segment of a link: a model name may hold
	// spaces, %, #, ? and any unicode.
	"seg":    pathSegment,
	"digest": shortDigest,
	"trunc":  truncate,
}

// pathSegment escapes s as one URL path segment.
func pathSegment(s string) string { return url.PathEscape(s) }

// shortDigest shortens a digest for a table cell (the full one is its
// title).
func shortDigest(d string) string {
	r := []rune(d)
	if len(r) <= 12 {
		return d
	}
	return string(r[:12]) + "…"
}

// truncate cuts s to n runes, marking the cut.
func truncate(n int, s string) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func parse(name, src string) *template.Template {
	return template.Must(template.New(name).Funcs(funcs).Parse(src))
}

const css = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;background:#fafafa}
header{background:#12355b;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
nav.crumb{padding:8px 24px;font-size:13px;color:#555}nav.crumb a{color:#12355b}
main{padding:0 24px 32px;max-width:1400px}
h1{font-size:22px;margin:12px 0}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px;width:640px}
figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
svg.chart{width:100%;height:auto;font-size:11px}svg .grid{stroke:#e5e5e5}svg .axis{stroke:#555}
svg .tick{fill:#555}svg .label{fill:#222;font-size:12px}svg .legend text{fill:#222}svg .empty{fill:#888}
.status-FINISHED{color:#1a7f37}.status-FAILED{color:#cf222e}.status-RUNNING{color:#9a6700}.status-KILLED{color:#6e7781}
.muted{color:#6e7781}
header nav{display:inline;margin-left:24px}header nav a{font-weight:400;margin-right:16px}
.missing{color:#cf222e}.ok{color:#1a7f37}.alias{background:#eef2f6;border-radius:3px;padding:0 4px;margin-right:4px;white-space:nowrap}
.desc{white-space:pre-wrap;max-width:900px}.nowrap{white-space:nowrap}
table.lineage>tbody>tr>th{white-space:nowrap}table.lineage table{margin:0}
`

var layout = parse("layout", `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}} · Cohort</title><style>`+css+`</style></head>
<body><header><a href="{{.Base}}/">Cohort tracking</a><nav><a href="{{.Base}}/">Experiments</a><a href="{{.Base}}/models">Models</a></nav></header>
{{if .Crumb}}<nav class="crumb">{{range $i, $c := .Crumb}}{{if $i}} › {{end}}<a href="{{$c.Href}}">{{$c.Text}}</a>{{end}}</nav>{{end}}
<main><h1>{{.Title}}</h1>
{{.Body}}
</main></body></html>
`)

var errorBody = parse("error", `<p>{{.What}}: {{.Err}}</p>`)

var experimentsBody = parse("experiments", `<table><tr><th>ID</th><th>name</th><th>created</th><th>lifecycle</th></tr>
{{range .Exps}}<tr><td class="num">{{.ExperimentID}}</td><td><a href="{{$.Base}}/experiments/{{.ExperimentID}}">{{.Name}}</a></td><td>{{time .CreationTime}}</td><td>{{.LifecycleStage}}</td></tr>
{{else}}<tr><td colspan="4" class="muted">no experiments yet: run a job (cohort run JOB.yaml)</td></tr>{{end}}</table>
`)

var experimentBody = parse("experiment", `<p class="muted">experiment {{.Exp.ExperimentID}} · {{.Exp.ArtifactLocation}}</p>
<table class="tree"><tr><th>run</th><th>kind</th><th>status</th><th>started</th><th>duration</th><th>accuracy</th><th>energy J</th><th></th></tr>
{{range .Tree}}<tr class="run kind-{{.Kind}}"><td>{{indent .Depth}}<a href="{{$.Base}}/runs/{{.Run.Info.RunID}}">{{.Run.Info.RunName}}</a></td><td>{{.Kind}}</td>
<td class="status-{{.Run.Info.Status}}">{{.Run.Info.Status}}</td><td>{{time .Run.Info.StartTime}}</td><td class="num">{{.Duration}}</td><td class="num">{{.Acc}}</td><td class="num">{{.Energy}}</td>
<td>{{if eq .Kind "job"}}<a href="{{$.Base}}/compare/{{.Run.Info.RunID}}">compare</a>{{end}}</td></tr>
{{else}}<tr><td colspan="8" class="muted">no runs</td></tr>{{end}}</table>
`)

var runBody = parse("run", `<table class="runinfo">
<tr><th>run ID</th><td>{{.Run.Info.RunID}}</td></tr>
<tr><th>status</th><td class="status-{{.Run.Info.Status}}">{{.Run.Info.Status}}</td></tr>
<tr><th>started</th><td>{{time .Run.Info.StartTime}}</td></tr>
<tr><th>ended</th><td>{{time .Run.Info.EndTime}} {{if .Duration}}({{.Duration}}){{end}}</td></tr>
<tr><th>artifact URI</th><td>{{.Run.Info.ArtifactURI}}</td></tr>
<tr><th>lifecycle</th><td>{{.Run.Info.LifecycleStage}}</td></tr>
</table>
{{if .IsJob}}<p><a href="{{.Base}}/compare/{{.Run.Info.RunID}}">the comparison of this job's arms</a></p>{{end}}
{{if .Versions}}<h2>Registered model versions</h2><table class="run-versions"><tr><th>model</th><th>version</th><th>aliases</th><th>stage</th></tr>{{range .Versions}}<tr><td><a href="{{$.Base}}/models/{{seg .Name}}">{{.Name}}</a></td><td class="num"><a href="{{$.Base}}/models/{{seg .Name}}/versions/{{seg .Version}}">{{.Version}}</a></td><td>{{range .Aliases}}<span class="alias">@{{.}}</span>{{end}}</td><td>{{.CurrentStage}}</td></tr>{{end}}</table>{{end}}
{{if .Children}}<h2>Child runs</h2><table><tr><th>run</th><th>status</th></tr>{{range .Children}}<tr><td><a href="{{$.Base}}/runs/{{.Info.RunID}}">{{.Info.RunName}}</a></td><td class="status-{{.Info.Status}}">{{.Info.Status}}</td></tr>{{end}}</table>{{end}}
{{if .Run.Inputs}}<h2>Inputs</h2><table><tr><th>dataset</th><th>digest</th><th>source</th><th>profile</th><th>tags</th></tr>
{{range .Run.Inputs}}<tr><td>{{.Dataset.Name}}</td><td><code>{{.Dataset.Digest}}</code></td><td><code>{{.Dataset.Source}}</code></td><td><code>{{.Dataset.Profile}}</code></td><td>{{range .Tags}}{{.Key}}={{.Value}} {{end}}</td></tr>{{end}}</table>{{end}}
{{if .Charts}}<h2>Metrics</h2><div class="charts">{{range .Charts}}<figure><figcaption>{{.Key}}</figcaption>{{.SVG}}</figure>{{end}}</div>{{end}}
<h2>Params</h2><table>{{range .Run.Data.Params}}<tr><th>{{.Key}}</th><td>{{.Value}}</td></tr>{{else}}<tr><td class="muted">none</td></tr>{{end}}</table>
<h2>Tags</h2><table>{{range .Run.Data.Tags}}<tr><th>{{.Key}}</th><td>{{.Value}}</td></tr>{{end}}</table>
<h2>Artifacts</h2>{{range .Artifacts}}<p><a href="{{$.Base}}/runs/{{$.Run.Info.RunID}}/artifacts/{{.Path}}">{{.Path}}</a> <span class="muted">{{.FileSize}} bytes</span></p>{{if .Text}}<pre>{{.Text}}</pre>{{end}}{{else}}<p class="muted">none</p>{{end}}
`)

var compareBody = parse("compare", `<pre class="table">{{.Table}}</pre>
<div class="charts">
<figure><figcaption>Test accuracy: federated arms per round, centralized per epoch</figcaption>{{.Accuracy}}</figure>
<figure><figcaption>Accuracy against cumulative energy</figcaption>{{.AccVsJ}}</figure>
<figure><figcaption>Energy per arm</figcaption>{{.Energy}}</figure>
<figure><figcaption>Wall time per arm</figcaption>{{.WallTime}}</figure>
</div>
{{range .Sites}}<h2>{{.Arm}}: sites</h2><p class="muted">site energy: {{.EnergyMethod}}</p><div class="charts">
<figure><figcaption>samples</figcaption>{{.Samples}}</figure><figure><figcaption>training time</figcaption>{{.Time}}</figure><figure><figcaption>energy</figcaption>{{.Energy}}</figure></div>{{end}}
<h2>Arms</h2><table><tr><th>arm</th><th>kind</th><th>final acc</th><th>best acc</th><th>rounds</th><th>wall s</th><th>MB moved</th><th>energy J</th><th>method</th><th>CO2 g</th></tr>
{{range .Arms}}<tr><td><a href="{{$.Base}}/runs/{{.RunID}}">{{.Name}}</a></td><td>{{if .Federated}}federated{{else}}centralized{{end}}</td><td class="num">{{value .FinalAccuracy}}</td><td class="num">{{value .BestAccuracy}}</td><td class="num">{{.Rounds}}</td><td class="num">{{value .WallSeconds}}</td><td class="num">{{value .MegabytesMoved}}</td><td class="num">{{value .EnergyJoules}}</td><td>{{.EnergyMethod}}</td><td class="num">{{value .CO2Grams}}</td></tr>{{end}}</table>
`)

var modelsBody = parse("models", `<form method="get" action="{{.Base}}/models"><input name="filter" value="{{.Filter}}" size="60" placeholder="name LIKE '%mnist%'"> <button>search</button></form>
<table class="models"><tr><th>name</th><th>latest version</th><th>aliases</th><th>last updated</th><th>description</th></tr>
{{range .Rows}}<tr class="model"><td><a href="{{$.Base}}/models/{{seg .Model.Name}}">{{.Model.Name}}</a></td><td class="num">{{if .Latest}}<a href="{{$.Base}}/models/{{seg .Model.Name}}/versions/{{seg .Latest}}">{{.Latest}}</a>{{end}}</td><td>{{range .Model.Aliases}}<span class="alias">@{{.Alias}} → {{.Version}}</span>{{end}}</td><td>{{time .Model.LastUpdatedTime}}</td><td>{{trunc 200 .Model.Description}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">{{if .Filter}}no registered model matches this filter{{else}}no registered models yet: a job registers its final models (registry: in JOB.yaml){{end}}</td></tr>{{end}}</table>
<p>{{if not .First}}<a href="{{.Base}}/models?filter={{.Filter}}">first page</a> {{end}}{{if .Next}}<a href="{{.Base}}/models?filter={{.Filter}}&page_token={{.Next}}">next page</a>{{end}}</p>
`)

var modelBody = parse("model", `{{if .Model.Description}}<p class="desc">{{.Model.Description}}</p>{{end}}
<table>
<tr><th>created</th><td>{{time .Model.CreationTime}}</td></tr>
<tr><th>last updated</th><td>{{time .Model.LastUpdatedTime}}</td></tr>
<tr><th>aliases</th><td>{{range .Model.Aliases}}<a class="alias" href="{{$.Base}}/models/{{seg $.Model.Name}}/versions/{{seg .Version}}">@{{.Alias}} → {{.Version}}</a>{{else}}<span class="muted">none</span>{{end}}</td></tr>
</table>
{{if .Model.Tags}}<h2>Tags</h2><table>{{range .Model.Tags}}<tr><th>{{.Key}}</th><td>{{.Value}}</td></tr>{{end}}</table>{{end}}
<h2>Versions</h2>
<table class="versions"><tr><th>version</th><th>aliases</th><th>stage</th><th>created</th><th>source run</th>{{range .Cols}}<th>{{.Label}}</th>{{end}}{{if .AnyDigest}}<th>dataset digests</th>{{end}}</tr>
{{range .Rows}}<tr class="version"><td class="num"><a href="{{$.Base}}/models/{{seg .V.Name}}/versions/{{seg .V.Version}}">{{.V.Version}}</a></td><td>{{range .V.Aliases}}<span class="alias">@{{.}}</span>{{end}}</td><td>{{.V.CurrentStage}}</td><td>{{time .V.CreationTime}}</td>
<td>{{if .V.RunID}}<a href="{{$.Base}}/runs/{{seg .V.RunID}}"><code>{{short .V.RunID}}</code></a>{{end}}</td>{{range $i, $c := .Cells}}{{with index $.Cols $i}}{{if not $c}}<td></td>{{else if .Num}}<td class="num">{{$c}}</td>{{else if .Digest}}<td><code title="{{$c}}">{{digest $c}}</code></td>{{else}}<td>{{$c}}</td>{{end}}{{end}}{{end}}{{if $.AnyDigest}}<td>{{range .Digests}}<div class="nowrap">{{.Site}}: <code title="{{.Digest}}">{{digest .Digest}}</code></div>{{end}}</td>{{end}}</tr>
{{else}}<tr><td colspan="5" class="muted">no versions</td></tr>{{end}}</table>
<p>{{if not .First}}<a href="{{.Base}}/models/{{seg .Model.Name}}">newest versions</a> {{end}}{{if .Next}}<a href="{{.Base}}/models/{{seg .Model.Name}}?page_token={{.Next}}">older versions</a>{{end}}</p>
`)

var versionBody = parse("version", `{{define "ref"}}{{if .Found}}<a href="{{.Href}}">{{.Run.Info.RunName}}</a> <span class="status-{{.Run.Info.Status}}">{{.Run.Info.Status}}</span> <code class="muted">{{.ID}}</code>{{if .Deleted}} <span class="missing">(deleted)</span>{{end}}{{else}}<span class="missing">{{.Missing}}</span>{{end}}{{end}}
<h2>Lineage</h2>
<table class="lineage">
<tr><th>model version</th><td>{{.V.Name}} version {{.V.Version}} {{range .V.Aliases}}<span class="alias">@{{.}}</span>{{end}}</td></tr>
<tr class="lineage-run"><th>↳ its run</th><td>{{template "ref" .Lineage.Arm}}</td></tr>
<tr class="lineage-job"><th>↳ job run</th><td>{{template "ref" .Lineage.Job}}</td></tr>
<tr class="lineage-arm"><th>↳ arm</th><td>{{if .Lineage.ArmName}}<b>{{.Lineage.ArmName}}</b>{{else}}<span class="missing">unknown</span>{{end}}{{with .Lineage.ArmKind}} · {{.}}{{end}}{{with .Lineage.Strategy}} · strategy {{.}}{{end}}</td></tr>
<tr class="lineage-sites"><th>↳ site runs</th><td>{{with .Lineage.SitesMissing}}<p class="missing">{{.}}</p>{{end}}{{if .Lineage.Sites}}<table><tr><th>site</th><th>run</th><th>dataset</th><th>digest</th><th>context</th><th>version's digest</th></tr>
{{range .Lineage.Sites}}{{$s := .}}{{range $i, $in := .Inputs}}<tr class="site">{{if not $i}}<td rowspan="{{len $s.Inputs}}" class="nowrap">{{$s.Site}}</td><td rowspan="{{len $s.Inputs}}">{{template "ref" $s.Run}}</td>{{end}}<td class="nowrap">{{$in.Dataset.Name}}</td><td><code>{{$in.Dataset.Digest}}</code></td><td>{{range $in.Tags}}{{if eq .Key "mlflow.data.context"}}{{.Value}}{{end}}{{end}}</td>{{if not $i}}<td rowspan="{{len $s.Inputs}}">{{template "tagged" $s}}</td>{{end}}</tr>
{{else}}<tr class="site"><td class="nowrap">{{$s.Site}}</td><td>{{template "ref" $s.Run}}</td><td colspan="3" class="muted">no dataset inputs</td><td>{{template "tagged" $s}}</td></tr>
{{end}}{{end}}</table>{{if .Lineage.MoreSites}}<p class="muted">more site runs than shown</p>{{end}}{{else if not .Lineage.SitesMissing}}<span class="muted">none{{if eq .Lineage.ArmKind "centralized"}} (a centralized arm trains on no site){{end}}</span>{{end}}</td></tr>
</table>
{{define "tagged"}}{{if .Tagged}}{{if .Match}}<span class="ok">✓ same</span>{{else}}<code class="missing" title="the version's tag differs from the site run's inputs">{{.Tagged}}</code>{{end}}{{else}}<span class="muted">—</span>{{end}}{{end}}
<h2>Download</h2>
<pre>{{.Download}}{{range .Aliases}}
cohort models download {{.}}{{end}}</pre>
<h2>Version</h2>
<table>
<tr><th>source</th><td><code>{{.V.Source}}</code></td></tr>
<tr><th>run</th><td>{{if .V.RunID}}<a href="{{.Base}}/runs/{{seg .V.RunID}}">{{.V.RunID}}</a>{{else}}<span class="muted">none</span>{{end}}</td></tr>
<tr><th>stage</th><td>{{.V.CurrentStage}}</td></tr>
<tr><th>status</th><td>{{.V.Status}}{{with .V.StatusMessage}} · {{.}}{{end}}</td></tr>
<tr><th>aliases</th><td>{{range .V.Aliases}}<span class="alias">@{{.}}</span>{{else}}<span class="muted">none</span>{{end}}</td></tr>
<tr><th>created</th><td>{{time .V.CreationTime}}{{with .V.UserID}} by {{.}}{{end}}</td></tr>
<tr><th>last updated</th><td>{{time .V.LastUpdatedTime}}</td></tr>
{{with .V.Description}}<tr><th>description</th><td class="desc">{{.}}</td></tr>{{end}}
</table>
<h2>Tags</h2><table>{{range .V.Tags}}<tr><th>{{.Key}}</th><td>{{.Value}}</td></tr>{{else}}<tr><td class="muted">none</td></tr>{{end}}</table>
`)
