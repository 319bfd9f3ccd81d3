package ui

import (
	"html/template"
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
`

var layout = parse("layout", `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}} · Cohort</title><style>`+css+`</style></head>
<body><header><a href="{{.Base}}/">Cohort tracking</a></header>
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

var runBody = parse("run", `<table>
<tr><th>run ID</th><td>{{.Run.Info.RunID}}</td></tr>
<tr><th>status</th><td class="status-{{.Run.Info.Status}}">{{.Run.Info.Status}}</td></tr>
<tr><th>started</th><td>{{time .Run.Info.StartTime}}</td></tr>
<tr><th>ended</th><td>{{time .Run.Info.EndTime}} {{if .Duration}}({{.Duration}}){{end}}</td></tr>
<tr><th>artifact URI</th><td>{{.Run.Info.ArtifactURI}}</td></tr>
<tr><th>lifecycle</th><td>{{.Run.Info.LifecycleStage}}</td></tr>
</table>
{{if .IsJob}}<p><a href="{{.Base}}/compare/{{.Run.Info.RunID}}">the comparison of this job's arms</a></p>{{end}}
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
