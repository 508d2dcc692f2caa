"""Attribution of outcomes to answers: recommendation ids, what each answer served, outcome
events counted per A/B variant, and the report that decides between champion and challenger."""
