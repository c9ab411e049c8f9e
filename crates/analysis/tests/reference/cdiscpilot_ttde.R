# Reference numbers for config/examples/cdiscpilot.yaml: the CDISC pilot (CDISCPILOT01) from its ADaM datasets
# in SAS transport files, read by R's own reader (foreign::read.xport) and joined by R on USUBJID, so that the
# readers, the record tables' pivots and the analysis are checked together.
# Safety population (ADSL SAFFL = "Y"), by actual treatment (TRT01A), reference Placebo.
# - time to first dermatologic event: ADTTE PARAMCD "TTDE", AVAL days, CNSR = 1 censored: Kaplan-Meier by arm
#   (log-log intervals), survival at 30/60/90/180 days, log-rank, Cox (Efron ties)
# - populations: subjects per arm with SAFFL, EFFFL, ITTFL = "Y" (no filter: each is a population of ADSL);
#   discontinuation (EOSSTT = "DISCONTINUED") by arm in the efficacy population
# - pivots: ADADAS ACTOT at baseline (ABLFL = "Y") and its change at week 24 (ANL01FL = "Y"), treatment-
#   emergent adverse events per subject from ADAE (TRTEMFL = "Y"; 0 for a subject without any), by arm
# - ADAS-Cog(11) change at week 24 in the efficacy population (ADSL EFFFL = "Y"): lm(CHG ~ arm + baseline)
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/cdiscpilot_ttde.R
# Writes crates/analysis/tests/reference/cdiscpilot_ttde.json, which crates/cli/tests/it/public_trials.rs
# compares with the analysis.json of `trialflow pipeline … --config config/examples/cdiscpilot.yaml`.

library(foreign)
library(survival)
dir <- "data/examples/cdiscpilot/"
adsl <- read.xport(paste0(dir, "adsl.xpt"))
adtte <- read.xport(paste0(dir, "adtte.xpt"))
adadas <- read.xport(paste0(dir, "adadas.xpt"))
adae <- read.xport(paste0(dir, "adae.xpt"))

arms <- c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")
per_arm <- function(flag) sapply(arms, function(a) sum(adsl[[flag]] == "Y" & adsl$TRT01A == a))
eff <- adsl[adsl$EFFFL == "Y", ]
eff_n <- sapply(arms, function(a) sum(eff$TRT01A == a))
eff_events <- sapply(arms, function(a) sum(eff$TRT01A == a & eff$EOSSTT == "DISCONTINUED"))
d <- adsl[adsl$SAFFL == "Y", c("USUBJID", "TRT01A")]
tte <- adtte[adtte$PARAMCD == "TTDE", c("USUBJID", "AVAL", "CNSR")]
stopifnot(!anyDuplicated(tte$USUBJID))
d <- merge(d, tte, by = "USUBJID", all.x = TRUE)
bl <- adadas[adadas$PARAMCD == "ACTOT" & adadas$ABLFL == "Y", c("USUBJID", "AVAL")]
names(bl)[2] <- "ADAS_BL"
wk24 <- adadas[adadas$PARAMCD == "ACTOT" & adadas$AVISIT == "Week 24" & adadas$ANL01FL == "Y", c("USUBJID", "CHG")]
names(wk24)[2] <- "ADAS_CHG24"
stopifnot(!anyDuplicated(bl$USUBJID), !anyDuplicated(wk24$USUBJID))
d <- merge(merge(d, bl, by = "USUBJID", all.x = TRUE), wk24, by = "USUBJID", all.x = TRUE)
teae <- table(adae$USUBJID[adae$TRTEMFL == "Y"])
d$N_TEAE <- ifelse(d$USUBJID %in% names(teae), teae[d$USUBJID], 0)
d$arm <- factor(d$TRT01A, levels = arms)
e <- merge(merge(adsl[adsl$EFFFL == "Y", c("USUBJID", "TRT01A")], bl, by = "USUBJID", all.x = TRUE), wk24,
           by = "USUBJID", all.x = TRUE)
e$arm <- factor(e$TRT01A, levels = arms)
ancova <- lm(ADAS_CHG24 ~ arm + ADAS_BL, data = e)
ci <- confint(ancova)
co <- summary(ancova)$coefficients
d$status <- 1 - d$CNSR

num <- function(x) paste0("[", paste(ifelse(is.na(x), "null", sprintf("%.17g", x)), collapse = ", "), "]")
fit <- survfit(Surv(AVAL, status) ~ arm, data = d, conf.type = "log-log")
tab <- summary(fit)$table
at <- summary(fit, times = c(30, 60, 90, 180), extend = TRUE)
lr <- survdiff(Surv(AVAL, status) ~ arm, data = d)
cox <- coxph(Surv(AVAL, status) ~ arm, data = d, ties = "efron",
             control = coxph.control(eps = 1e-14, iter.max = 100))
by_arm <- function(x, f) sapply(levels(d$arm), function(a) f(x[d$arm == a]))
pivot <- function(x) sprintf('{"n": %s, "mean": %s, "sd": %s}', num(by_arm(x, function(v) sum(!is.na(v)))),
                             num(by_arm(x, function(v) mean(v, na.rm = TRUE))),
                             num(by_arm(x, function(v) sd(v, na.rm = TRUE))))

json <- sprintf('{
 "versions": {"R": "%s", "survival": "%s"},
 "population": "CDISCPILOT01 safety population (ADSL SAFFL = Y) by TRT01A; ADTTE PARAMCD TTDE",
 "arms": ["Placebo", "Xanomeline High Dose", "Xanomeline Low Dose"],
 "n": %s, "events": %s,
 "median": %s, "median_ci_low": %s, "median_ci_high": %s,
 "at_times": {"time": %s, "surv": %s, "lower": %s, "upper": %s, "n_risk": %s},
 "logrank": {"chi_square": %.17g, "df": %d},
 "cox": {"terms": ["arm=Xanomeline High Dose", "arm=Xanomeline Low Dose"], "coef": %s, "se": %s},
 "pivots": {"ADAS_BL": %s, "ADAS_CHG24": %s, "N_TEAE": %s},
 "populations": {"safety": %s, "efficacy": %s, "itt": %s},
 "outcome_efficacy": {"n": %s, "events": %s},
 "ancova_adas_chg24": {"terms": ["arm=Xanomeline High Dose", "arm=Xanomeline Low Dose", "ADAS_BL"], "n": %d,
   "df": %d, "estimate": %s, "se": %s, "ci_low": %s, "ci_high": %s, "p": %s}
}
', R.version.string, as.character(packageVersion("survival")), num(tab[, "n.max"]), num(tab[, "events"]),
   num(tab[, "median"]), num(tab[, "0.95LCL"]), num(tab[, "0.95UCL"]),
   num(at$time), num(at$surv), num(at$lower), num(at$upper), num(at$n.risk),
   lr$chisq, length(lr$n) - 1L, num(coef(cox)), num(sqrt(diag(vcov(cox)))),
   pivot(d$ADAS_BL), pivot(d$ADAS_CHG24), pivot(d$N_TEAE),
   num(per_arm("SAFFL")), num(per_arm("EFFFL")), num(per_arm("ITTFL")), num(eff_n), num(eff_events),
   nobs(ancova), ancova$df.residual, num(co[-1, 1]), num(co[-1, 2]), num(ci[-1, 1]), num(ci[-1, 2]),
   num(co[-1, 4]))
writeLines(json, "crates/analysis/tests/reference/cdiscpilot_ttde.json", sep = "")
cat(json)
