# Reference numbers for trialflow's stratified and restricted-mean survival analyses (analysis.strata,
# analysis.rmst_horizon, milestone differences at analysis.survival_times):
# - stratified log-rank: survdiff(Surv(time, status) ~ arm + strata(s)); stratified Cox (Efron):
#   coxph(Surv(time, status) ~ arm + strata(s))
# - restricted mean survival time per arm: print(survfit(…), rmean = tau)'s rmean and se(rmean); the difference
#   against the reference with a normal 95% CI (independent arms)
# - survival differences at the milestone times: summary(survfit(…), times)'s surv and std.err (Greenwood)
#
# Trials, each restating its config file:
# - colon (config/examples/colon.yaml): R survival's colon, death records (etype == 2), arms by rx, reference
#   Obs; strata node4; horizon 1825 days; milestones 365, 1095, 1825
# - cdiscpilot (config/examples/cdiscpilot.yaml): time to first dermatologic event (ADTTE TTDE, CNSR = 1
#   censored) in the safety population, arms by TRT01A; strata SITEGR1; horizon 180 days; milestones 30, 60,
#   90, 180
# - lung (config/examples/lung.yaml): R survival's lung, arms by sex (1 reference), status 2 = death; strata
#   ph.ecog (the patient without it is left out of the stratified analyses; ECOG 3 is a stratum of one);
#   horizon 730 days; milestones 180, 365, 730
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/survival_more.R
# (or cargo xtask references). Writes survival_more.json, compared by crates/cli/tests/it/public_trials.rs.

suppressPackageStartupMessages({
  library(foreign)
  library(survival)
  library(jsonlite)
})

analyse <- function(d, tau, times) {
  lr <- survdiff(Surv(time, status) ~ arm + strata(s), data = d)
  cox <- coxph(Surv(time, status) ~ arm + strata(s), data = d, ties = "efron",
               control = coxph.control(eps = 1e-14, iter.max = 100))
  fit <- survfit(Surv(time, status) ~ arm, data = d)
  tab <- summary(fit, rmean = tau)$table
  rmean <- unname(tab[, "rmean"])
  se <- unname(tab[, "se(rmean)"])
  at <- summary(fit, times = times, extend = TRUE)
  arm_of <- sub("arm=", "", as.character(at$strata))
  arms <- levels(d$arm)
  milestones <- list()
  for (t in times) {
    ref <- which(arm_of == arms[1] & at$time == t)
    for (a in arms[-1]) {
      i <- which(arm_of == a & at$time == t)
      milestones[[length(milestones) + 1]] <- list(
        time = t, arm = a, estimate = at$surv[i] - at$surv[ref],
        se = sqrt(at$std.err[i]^2 + at$std.err[ref]^2))
    }
  }
  list(
    arms = arms,
    strata = length(unique(na.omit(d$s))),
    logrank = list(chi_square = lr$chisq, df = length(arms) - 1),
    cox = list(coef = unname(coef(cox)), se = unname(sqrt(diag(vcov(cox))))),
    rmst = list(horizon = tau, rmean = rmean, se = se,
                difference = rmean[-1] - rmean[1], difference_se = sqrt(se[-1]^2 + se[1]^2)),
    milestones = milestones)
}

colon <- read.csv("data/examples/colon.csv")
colon <- colon[colon$etype == 2, ]
colon$arm <- factor(colon$rx, levels = c("Obs", "Lev", "Lev+5FU"))
colon$s <- colon$node4
colon_r <- analyse(colon, 1825, c(365, 1095, 1825))

dir <- "data/examples/cdiscpilot/"
adsl <- read.xport(paste0(dir, "adsl.xpt"))
adtte <- read.xport(paste0(dir, "adtte.xpt"))
d <- adsl[adsl$SAFFL == "Y", c("USUBJID", "TRT01A", "SITEGR1")]
tte <- adtte[adtte$PARAMCD == "TTDE", c("USUBJID", "AVAL", "CNSR")]
d <- merge(d, tte, by = "USUBJID")
d$time <- d$AVAL
d$status <- 1 - d$CNSR
d$arm <- factor(d$TRT01A, levels = c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose"))
d$s <- d$SITEGR1
pilot_r <- analyse(d, 180, c(30, 60, 90, 180))

lung <- read.csv("data/examples/lung.csv")
lung$arm <- factor(as.character(lung$sex), levels = c("1", "2"))
lung$s <- lung$ph.ecog
lung_r <- analyse(lung, 730, c(180, 365, 730))

out <- list(versions = list(R = R.version.string, survival = as.character(packageVersion("survival"))),
            colon = colon_r, cdiscpilot = pilot_r, lung = lung_r)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "crates/analysis/tests/reference/survival_more.json")
