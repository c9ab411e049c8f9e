# Reference numbers for trialflow's continuous endpoints (analysis.continuous): ANCOVA by R's lm, least-squares
# means and their differences against the reference arm by emmeans, the multiplicity adjustments (Bonferroni
# by emmeans; Dunnett's many-to-one as the exact bivariate t of the two comparisons, by mvtnorm's TVPACK), and
# the dose-response trend as an emmeans contrast of the centred dose scores.
#
# Trials, each restating the population and model of its config file:
# - cdiscpilot (config/examples/cdiscpilot.yaml, second continuous entry): ADAS-Cog(11) change from baseline at
#   week 24 ~ arm + baseline + pooled site (SITEGR1), efficacy population (ADSL EFFFL = "Y"), arms by TRT01A,
#   Dunnett, trend over the doses 0 / 54 / 81 mg
# - opt (config/examples/opt.yaml): mean pocket depth at visit 5 ~ Group + baseline + Clinic, every subject,
#   Bonferroni
# - supraclavicular (config/examples/supraclavicular.yaml): total opioid ~ group + age + bmi + gender
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/ancova.R
# Writes crates/analysis/tests/reference/ancova.json, which crates/cli/tests/it/public_trials.rs compares with
# the analysis.json of each config's pipeline run.

suppressPackageStartupMessages({
  library(foreign)
  library(emmeans)
  library(mvtnorm)
  library(jsonlite)
})

# Dunnett: 1 - P(max |T_i| <= c) for the comparisons' correlation, two-sided, by inclusion-exclusion over
# TVPACK's one-sided bivariate t probabilities (exact to its 1e-14 tolerance).
box2 <- function(c, corr, df) {
  F <- function(a, b) pmvt(lower = c(-Inf, -Inf), upper = c(a, b), df = df, corr = corr,
                           algorithm = TVPACK(1e-14))[1]
  F(c, c) - F(c, -c) - F(-c, c) + F(-c, -c)
}

analyse <- function(d, formula, multiplicity = "none", trend = NULL) {
  fit <- lm(formula, data = d)
  emm <- emmeans(fit, "arm")
  s <- summary(emm)
  raw <- summary(contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none"), infer = TRUE)
  k <- nrow(raw)
  df <- df.residual(fit)
  if (multiplicity == "bonferroni") {
    adj <- summary(contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "bonferroni"), infer = TRUE)
    p_adj <- adj$p.value
    lower <- adj$lower.CL
    upper <- adj$upper.CL
    crit <- qt(1 - 0.025 / k, df)
  } else if (multiplicity == "dunnett") {
    stopifnot(k == 2)
    v <- vcov(contrast(emm, "trt.vs.ctrl", ref = 1))
    corr <- cov2cor(v)
    p_adj <- sapply(abs(raw$t.ratio), function(t) 1 - box2(t, corr, df))
    crit <- uniroot(function(c) box2(c, corr, df) - 0.95, c(1, 5), tol = 1e-13)$root
    lower <- raw$estimate - crit * raw$SE
    upper <- raw$estimate + crit * raw$SE
  } else {
    p_adj <- raw$p.value
    lower <- raw$lower.CL
    upper <- raw$upper.CL
    crit <- qt(0.975, df)
  }
  out <- list(
    n = nobs(fit), df = df,
    arms = as.character(s$arm),
    lsmean = list(estimate = s$emmean, se = s$SE, lower = s$lower.CL, upper = s$upper.CL),
    difference = list(arm = as.character(levels(d$arm))[-1], estimate = raw$estimate, se = raw$SE,
                      t = raw$t.ratio, p = raw$p.value, p_adjusted = p_adj, lower = lower, upper = upper),
    multiplicity = multiplicity, critical_value = crit)
  if (!is.null(trend)) {
    w <- trend[levels(d$arm)] - mean(trend[levels(d$arm)])
    tr <- summary(contrast(emm, list(trend = unname(w))), infer = TRUE)
    out$trend <- list(coefficients = unname(w), estimate = tr$estimate, se = tr$SE, t = tr$t.ratio,
                      df = tr$df, p = tr$p.value)
  }
  out
}

# The pilot, joined on USUBJID as the record tables' pivots do.
dir <- "data/examples/cdiscpilot/"
adsl <- read.xport(paste0(dir, "adsl.xpt"))
adadas <- read.xport(paste0(dir, "adadas.xpt"))
bl <- adadas[adadas$PARAMCD == "ACTOT" & adadas$ABLFL == "Y", c("USUBJID", "AVAL")]
names(bl)[2] <- "ADAS_BL"
wk24 <- adadas[adadas$PARAMCD == "ACTOT" & adadas$AVISIT == "Week 24" & adadas$ANL01FL == "Y",
               c("USUBJID", "CHG")]
names(wk24)[2] <- "ADAS_CHG24"
e <- adsl[adsl$EFFFL == "Y", c("USUBJID", "TRT01A", "SITEGR1")]
e <- merge(merge(e, bl, by = "USUBJID", all.x = TRUE), wk24, by = "USUBJID", all.x = TRUE)
e$arm <- factor(e$TRT01A, levels = c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose"))
e$SITEGR1 <- factor(e$SITEGR1)
pilot <- analyse(e, ADAS_CHG24 ~ arm + ADAS_BL + SITEGR1, "dunnett",
                 c("Placebo" = 0, "Xanomeline Low Dose" = 54, "Xanomeline High Dose" = 81))

# Empty cells are missing values in both flat exports.
opt <- read.csv("data/examples/opt.csv", na.strings = c("", "   "), stringsAsFactors = FALSE)
opt$arm <- factor(opt$Group, levels = c("C", "T"))
opt$Clinic <- factor(opt$Clinic)
opt_r <- analyse(opt, V5.PD.avg ~ arm + BL.PD.avg + Clinic, "bonferroni")

supra <- read.csv("data/examples/supraclavicular.csv", na.strings = "", stringsAsFactors = FALSE)
supra$arm <- factor(as.character(supra$group), levels = c("1", "2"))
supra$gender <- factor(as.character(supra$gender))
supra_r <- analyse(supra, opioid_total ~ arm + age + bmi + gender)

out <- list(
  versions = list(R = R.version.string, emmeans = as.character(packageVersion("emmeans")),
                  mvtnorm = as.character(packageVersion("mvtnorm"))),
  cdiscpilot = pilot, opt = opt_r, supraclavicular = supra_r)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "crates/analysis/tests/reference/ancova.json")
