package server

import (
	"reflect"
	"slices"
	"testing"

	"github.com/cohortfl/cohort/aggregators"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestClientSettingsOnTheWire: what the coordinator writes into a task's
// train parameters is what a site reads back, for every strategy and for
// settings with every field set (a field added to
// aggregators.ClientSettings and not to the wire fails here).
func TestClientSettingsOnTheWire(t *testing.T) {
	var all aggregators.ClientSettings
	v := reflect.ValueOf(&all).Elem()
	for i := range v.NumField() {
		v.Field(i).SetFloat(float64(i) + 0.5)
	}
	cases := map[string]aggregators.ClientSettings{"every field set": all}
	for _, name := range aggregators.Names() {
		params := map[string]float64{}
		for _, k := range aggregators.ClientParamNames() {
			if slices.Contains(aggregators.Params(name), k) {
				params[k] = 0.75
			}
		}
		s, err := aggregators.New(name, params)
		if err != nil {
			t.Fatal(err)
		}
		cases[name] = aggregators.ClientParams(s)
	}
	if cases["fedprox"].Mu != 0.75 {
		t.Fatalf("fedprox with mu 0.75: client settings %+v, want mu 0.75", cases["fedprox"])
	}
	for name, cs := range cases {
		p := withClientSettings(&pb.TrainParams{Epochs: 3, Lr: 0.1}, cs)
		if got := aggregators.ReadClientSettings(p); got != cs {
			t.Errorf("%s: the site reads %+v, the coordinator wrote %+v", name, got, cs)
		}
		if p.GetEpochs() != 3 || p.GetLr() != 0.1 {
			t.Errorf("%s: withClientSettings changed the train settings: epochs %d, lr %v; want 3, 0.1", name, p.GetEpochs(), p.GetLr())
		}
	}
}
