# Sourced by the benchmark scripts: the few numbers they all take.

# secs CMD...: the wall seconds CMD takes, three decimals (its output is dropped)
secs() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" > /dev/null 2>&1
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

# median: of the numbers on stdin, one per line (the mean of the middle two
# when there are an even number)
median() {
	sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B, two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# span N...: "min-max" of the numbers
span() { printf '%s\n' "$@" | sort -g | sed -n '1p;$p' | paste -sd-; }
