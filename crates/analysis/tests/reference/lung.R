# Reference numbers for config/examples/lung.yaml (R's survival::lung, compared by sex), from R itself: the
# export as R users hold it (1/2 status coding, no id column, empty fields for NA).
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/lung.R
# Writes crates/analysis/tests/reference/lung.json, which crates/cli/tests/it/public_trials.rs compares with the
# analysis.json of `trialflow pipeline … --config config/examples/lung.yaml`.

library(survival)
lung <- read.csv("data/examples/lung.csv")
num <- function(x) paste0("[", paste(ifelse(is.na(x), "null", sprintf("%.17g", x)), collapse = ", "), "]")

fit <- survfit(Surv(time, status) ~ sex, data = lung, conf.type = "log-log")
tab <- summary(fit)$table
at <- summary(fit, times = c(180, 365, 730), extend = TRUE)
lr <- survdiff(Surv(time, status) ~ sex, data = lung)
cox <- coxph(Surv(time, status) ~ factor(sex), data = lung, ties = "efron",
             control = coxph.control(eps = 1e-14, iter.max = 100))
lung$ecog <- factor(lung$ph.ecog)
adj <- coxph(Surv(time, status) ~ factor(sex) + age + ecog, data = lung, ties = "efron",
             control = coxph.control(eps = 1e-14, iter.max = 100))

json <- sprintf('{
 "versions": {"R": "%s", "survival": "%s"},
 "population": "survival::lung, 228 patients, one row each; sex 1 (reference) vs 2",
 "n": %d, "events": %s,
 "median": %s, "median_ci_low": %s, "median_ci_high": %s,
 "at_times": {"time": %s, "surv": %s, "lower": %s, "upper": %s, "n_risk": %s},
 "logrank": {"chi_square": %.17g, "df": %d},
 "cox": {"coef": %.17g, "se": %.17g},
 "cox_adjusted": {"terms": ["sex=2", "age", "ph.ecog=1", "ph.ecog=2", "ph.ecog=3"], "coef": %s, "se": %s, "n": %d}
}
', R.version.string, as.character(packageVersion("survival")), nrow(lung), num(tab[, "events"]),
   num(tab[, "median"]), num(tab[, "0.95LCL"]), num(tab[, "0.95UCL"]),
   num(at$time), num(at$surv), num(at$lower), num(at$upper), num(at$n.risk),
   lr$chisq, length(lr$n) - 1L, coef(cox), sqrt(diag(vcov(cox))),
   num(coef(adj)), num(sqrt(diag(vcov(adj)))), adj$n)
writeLines(json, "crates/analysis/tests/reference/lung.json", sep = "")
cat(json)
