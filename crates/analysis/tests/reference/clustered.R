# Reference numbers for cluster-robust (sandwich) standard errors, from R.
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/clustered.R
# (Debian: apt-get install r-base-core r-cran-survival). Writes crates/analysis/tests/reference/clustered.json,
# which crates/analysis/tests/reference.rs compares against; the R and survival versions are recorded in it.
#
# Cox: coxph(Surv(time, status) ~ rx + cluster(id)), Efron ties: the robust variance from the score residuals,
# whose Efron form gives a tied death only its fractional share of each risk set. lifelines' cluster_col and
# statsmodels' PHReg(groups=) use Breslow-form score residuals whatever the ties, and differ from R by about
# 6e-5 (relative) on these data; R is the reference. On the same data with every tie broken the three agree:
# clustered_python.py checks trialflow against lifelines and statsmodels there.
# Logistic: glm(binomial) with the plain sandwich V = B (sum_c u_c u_c') B, B = vcov(fit), u_c the summed
# scores (y - mu) x of cluster c, no small-sample factor (sandwich::vcovCL(type = "HC0", cadjust = FALSE);
# statsmodels' cov_type = "cluster" with use_correction = False).

library(survival)

num <- function(x) paste0("[", paste(sprintf("%.17g", x), collapse = ", "), "]")
str <- function(x) paste0("[", paste0('"', x, '"', collapse = ", "), "]")

colon <- read.csv("data/examples/colon.csv")
colon$rx <- factor(colon$rx, levels = c("Obs", "Lev", "Lev+5FU"))
ctl <- coxph.control(eps = 1e-14, toler.chol = 1e-15, iter.max = 100)
cox <- function(formula) {
  f <- suppressWarnings(coxph(formula, data = colon, ties = "efron", control = ctl))
  sprintf('{"terms": %s, "coef": %s, "robust_se": %s, "naive_se": %s}',
          str(names(coef(f))), num(coef(f)), num(sqrt(diag(f$var))), num(sqrt(diag(f$naive.var))))
}
cox_arm <- cox(Surv(time, status) ~ rx + cluster(id))
cox_adjusted <- cox(Surv(time, status) ~ rx + age + cluster(id))

resp <- read.csv("data/examples/respiratory.csv")
resp <- resp[resp$month > 0, ]
resp$good <- as.numeric(trimws(resp$status) == "good")
resp$treated <- as.numeric(resp$treatment == "treatment")
logit <- function(formula) {
  f <- glm(formula, family = binomial, data = resp, control = glm.control(epsilon = 1e-14, maxit = 100))
  x <- model.matrix(f)
  u <- rowsum(x * (resp$good - fitted(f)), resp$subject)
  v <- vcov(f) %*% crossprod(u) %*% vcov(f)
  sprintf('{"terms": %s, "coef": %s, "robust_se": %s, "naive_se": %s}',
          str(names(coef(f))), num(coef(f)), num(sqrt(diag(v))), num(sqrt(diag(vcov(f)))))
}
logit_arm <- logit(good ~ treated)
logit_adjusted <- logit(good ~ treated + age)

json <- sprintf('{
 "versions": {"R": "%s", "survival": "%s"},
 "cox_colon_both_records": {
  "population": "survival::colon, all 1858 rows (929 patients x 2 event types), clustered by id",
  "ties": "efron", "clusters": %d, "rows": %d,
  "arm": %s,
  "adjusted": %s
 },
 "logistic_respiratory_visits": {
  "population": "HSAUR::respiratory, months 1-4 (4 visits per patient), clustered by subject",
  "clusters": %d, "rows": %d,
  "arm": %s,
  "adjusted": %s
 }
}
', R.version.string, as.character(packageVersion("survival")), length(unique(colon$id)), nrow(colon),
   cox_arm, cox_adjusted, length(unique(resp$subject)), nrow(resp), logit_arm, logit_adjusted)
writeLines(json, "crates/analysis/tests/reference/clustered.json", sep = "")
cat(json)
