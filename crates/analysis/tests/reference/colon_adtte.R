# Reference numbers for config/examples/colon_adtte.yaml: the colon trial's two time-to-event endpoints by arm
# (death, the primary; recurrence, a secondary endpoint), computed by R from data/examples/colon.csv itself
# (etype 2 and 1), not from the ADaM-shaped files the config reads: Kaplan-Meier n and events, log-rank, Cox
# (Efron ties), reference arm Obs.
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/colon_adtte.R
# Writes crates/analysis/tests/reference/colon_adtte.json, which crates/cli/tests/it/public_trials.rs compares.

library(survival)
colon <- read.csv("data/examples/colon.csv")
colon$arm <- factor(colon$rx, levels = c("Obs", "Lev", "Lev+5FU"))
num <- function(x) paste0("[", paste(sprintf("%.17g", x), collapse = ", "), "]")
endpoint <- function(etype) {
  d <- colon[colon$etype == etype, ]
  fit <- survfit(Surv(time, status) ~ arm, data = d)
  tab <- summary(fit)$table
  lr <- survdiff(Surv(time, status) ~ arm, data = d)
  cox <- coxph(Surv(time, status) ~ arm, data = d, ties = "efron",
               control = coxph.control(eps = 1e-14, iter.max = 100))
  sprintf('{"n": %s, "events": %s, "logrank": %.17g, "df": %d, "coef": %s, "se": %s}',
          num(tab[, "n.max"]), num(tab[, "events"]), lr$chisq, length(lr$n) - 1L,
          num(coef(cox)), num(sqrt(diag(vcov(cox)))))
}
json <- sprintf('{
 "versions": {"R": "%s", "survival": "%s"},
 "arms": ["Obs", "Lev", "Lev+5FU"],
 "death": %s,
 "recurrence": %s
}
', R.version.string, as.character(packageVersion("survival")), endpoint(2), endpoint(1))
writeLines(json, "crates/analysis/tests/reference/colon_adtte.json", sep = "")
cat(json)
