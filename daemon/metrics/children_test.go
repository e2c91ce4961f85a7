package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A cached child is the vector's own child: counts through the cache and
// through the vector land on the same series, within the limit and past
// it.
func TestChildrenCountOnTheVectorsSeries(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total"}, []string{"k"})
	c := Children[string, prometheus.Counter]{Limit: 2}
	made := 0
	get := func(k string) prometheus.Counter {
		return c.Get(k, func() prometheus.Counter { made++; return vec.WithLabelValues(k) })
	}
	for _, k := range []string{"a", "a", "b", "c", "c", "c", "a"} {
		get(k).Inc()
	}
	for _, tc := range []struct {
		label string
		want  float64
	}{{"a", 3}, {"b", 1}, {"c", 3}} {
		if got := testutil.ToFloat64(vec.WithLabelValues(tc.label)); got != tc.want {
			t.Errorf("series %s = %v, want %v", tc.label, got, tc.want)
		}
	}
	// a and b cached at their first use; c, past the limit, made each time.
	if made != 2+3 {
		t.Errorf("children made %d times, want 5 (2 cached, then 3 uncached uses)", made)
	}
}
