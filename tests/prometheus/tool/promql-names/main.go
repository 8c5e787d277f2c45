// Command promql-names reads a JSON array of PromQL expressions on stdin and prints, for each, the
// metric names and label names it refers to, as JSON. The monitoring test compares them with what
// the operator exports, so a rule or a dashboard panel cannot name a series that never exists.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Selector is one vector selector: the metric it names and the labels its matchers test.
type Selector struct {
	Metric string   `json:"metric"`
	Labels []string `json:"labels"`
}

// Grouping is the label list of one aggregation (by/without) and the metrics it aggregates:
// each label must be one of theirs.
type Grouping struct {
	Labels  []string `json:"labels"`
	Metrics []string `json:"metrics"`
}

// Names is what one expression refers to.
type Names struct {
	Expr      string     `json:"expr"`
	Selectors []Selector `json:"selectors"`
	Groupings []Grouping `json:"groupings"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fail("reading a JSON array of expressions: %v", err)
	}
	out := make([]Names, 0, len(exprs))
	for _, e := range exprs {
		tree, err := parser.NewParser(parser.Options{}).ParseExpr(e)
		if err != nil {
			fail("%q: %v", e, err)
		}
		out = append(out, Names{Expr: e, Selectors: selectors(tree), Groupings: groupings(tree)})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing: %v", err)
	}
}

func selectors(tree parser.Expr) []Selector {
	found := []Selector{}
	for _, vs := range vectorSelectors(tree) {
		s := Selector{Metric: vs.Name, Labels: []string{}}
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				s.Labels = append(s.Labels, m.Name)
			} else if s.Metric == "" && m.Type == labels.MatchEqual {
				s.Metric = m.Value
			}
		}
		found = append(found, s)
	}
	return found
}

func groupings(tree parser.Expr) []Grouping {
	found := []Grouping{}
	parser.Inspect(tree, func(node parser.Node, _ []parser.Node) error {
		agg, ok := node.(*parser.AggregateExpr)
		if !ok || len(agg.Grouping) == 0 {
			return nil
		}
		metrics := map[string]bool{}
		for _, vs := range vectorSelectors(agg.Expr) {
			metrics[vs.Name] = true
		}
		g := Grouping{Labels: agg.Grouping, Metrics: []string{}}
		for m := range metrics {
			g.Metrics = append(g.Metrics, m)
		}
		sort.Strings(g.Metrics)
		found = append(found, g)
		return nil
	})
	return found
}

func vectorSelectors(tree parser.Node) []*parser.VectorSelector {
	var found []*parser.VectorSelector
	parser.Inspect(tree, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			found = append(found, vs)
		}
		return nil
	})
	return found
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "promql-names: "+format+"\n", args...)
	os.Exit(1)
}
