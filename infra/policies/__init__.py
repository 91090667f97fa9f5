"""Security rules (:mod:`infra.policies.rules`) and the CrossGuard policy pack built from them."""
