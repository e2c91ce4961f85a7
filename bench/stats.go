package bench

import (
	"fmt"
	"math"
	"slices"
)

// quantile is the nearest-rank q-quantile of xs (0 < q <= 1).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// spread is one figure over the rounds: its median, min and max.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	return spread{quantile(xs, 0.5), slices.Min(xs), slices.Max(xs)}
}

// format prints the median and the range, with digits decimals.
func (s spread) format(digits int) string {
	if math.IsNaN(s.med) {
		return "—"
	}
	if s.lo == s.hi {
		return fmt.Sprintf("%.*f", digits, s.med)
	}
	return fmt.Sprintf("%.*f (%.*f..%.*f)", digits, s.med, digits, s.lo, digits, s.hi)
}
