package pixelssql;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.analysis.UnresolvedRelation;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.catalyst.types.DataTypeUtils;
import org.apache.spark.sql.execution.python.UserDefinedPythonFunction;
import org.apache.spark.sql.execution.python.UserDefinedPythonTableFunction;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractPartialFunction;

/**
 * The pixels-sql Python functions as session-independent SQL functions.
 *
 * <p>Functions registered with {@code spark.udf.register} are temporary: they exist in one
 * session only (a second JDBC connection or a Spark Connect client does not see them) and a
 * persistent view may not call them. Instead, the extension injects each name listed in the
 * {@value #NAMES_CONF} setting with {@code injectFunction} — as Spark's own built-in functions are
 * — and the injected builder looks up, when a query is analysed, the Python UDF that the driver's
 * Python process registered once with {@link #register}. Every session of the application, and
 * every persistent view, then resolves the same functions.
 *
 * <p>Relations (the {@code dicom_dictionary} view) work alike: an analyzer rule replaces an
 * unresolved single-part table name by the rows registered with {@link #registerRelation}, when no
 * table or view of that name resolved first.
 */
public final class PythonFunctions {

  /** Comma-separated function names to inject (set by pixels_sql.session from its registry). */
  public static final String NAMES_CONF = "spark.pixels_sql.functions";
  /** Comma-separated relation names the analyzer rule may resolve. */
  public static final String RELATIONS_CONF = "spark.pixels_sql.relations";

  private static final Map<String, UserDefinedPythonFunction> FUNCTIONS = new ConcurrentHashMap<>();
  private static final Map<String, LocalRelation> RELATIONS = new ConcurrentHashMap<>();
  private static final Map<String, UserDefinedPythonTableFunction> TABLE_FUNCTIONS =
      new ConcurrentHashMap<>();

  private PythonFunctions() {}

  /** Called from the driver's Python process: {@code name} now resolves to {@code function}. */
  public static void register(String name, UserDefinedPythonFunction function) {
    FUNCTIONS.put(key(name), function);
  }

  /**
   * Called from the driver's Python process: {@code name} now reads {@code rows}, a JSON array of
   * arrays (one per row, values in the order of the columns of {@code schemaDdl}; STRING and
   * BOOLEAN columns). Built here rather than from a DataFrame of Python rows: collecting one
   * starts Python workers, which cost every session about five seconds.
   */
  @SuppressWarnings({"unchecked", "rawtypes"})
  public static void registerRelationRows(String name, String schemaDdl, String rows)
      throws java.io.IOException {
    StructType schema = StructType.fromDDL(schemaDdl);
    StructField[] fields = schema.fields();
    for (StructField field : fields) {
      if (!(field.dataType() instanceof StringType) && !(field.dataType() instanceof BooleanType)) {
        throw new IllegalArgumentException(
            "registerRelationRows takes STRING and BOOLEAN columns, not " + field.toDDL());
      }
    }
    JsonNode array = new ObjectMapper().readTree(rows);
    List<Row> data = new ArrayList<>(array.size());
    for (JsonNode node : array) {
      Object[] values = new Object[fields.length];
      for (int index = 0; index < fields.length; index++) {
        JsonNode value = node.get(index);
        if (value == null || value.isNull()) {
          values[index] = null;
        } else if (fields[index].dataType() instanceof BooleanType) {
          values[index] = value.asBoolean();
        } else {
          values[index] = value.asText();
        }
      }
      data.add(RowFactory.create(values));
    }
    Seq output = DataTypeUtils.toAttributes(schema);
    RELATIONS.put(
        key(name),
        LocalRelation.fromExternalRows(output, CollectionConverters.asScala(data).toSeq()));
  }

  /**
   * Called from the driver's Python process: {@code name} is now a Python table function that
   * the extension's own table functions may delegate to (list_files on object storage).
   */
  public static void registerTableFunction(String name, UserDefinedPythonTableFunction function) {
    TABLE_FUNCTIONS.put(key(name), function);
  }

  /** The Python table function registered as {@code name}, or null. */
  static UserDefinedPythonTableFunction tableFunction(String name) {
    return TABLE_FUNCTIONS.get(key(name));
  }

  /**
   * Whether {@code expression} calls one of the functions the driver registered here (as opposed
   * to a Python UDF a client sent): the same Python function object.
   */
  static boolean isOwn(Expression expression) {
    Object function = null;
    if (expression instanceof org.apache.spark.sql.catalyst.expressions.PythonUDF) {
      function = ((org.apache.spark.sql.catalyst.expressions.PythonUDF) expression).func();
    } else if (expression instanceof org.apache.spark.sql.catalyst.expressions.PythonUDTF) {
      function = ((org.apache.spark.sql.catalyst.expressions.PythonUDTF) expression).func();
    } else if (expression instanceof org.apache.spark.sql.catalyst.expressions.PythonUDAF) {
      function = ((org.apache.spark.sql.catalyst.expressions.PythonUDAF) expression).func();
    }
    if (function == null) {
      return false;
    }
    for (UserDefinedPythonFunction own : FUNCTIONS.values()) {
      if (own.func() == function) {
        return true;
      }
    }
    for (UserDefinedPythonTableFunction own : TABLE_FUNCTIONS.values()) {
      if (own.func() == function) {
        return true;
      }
    }
    return false;
  }

  /** Whether {@code name} has a registered Python UDF in this JVM. */
  public static boolean isRegistered(String name) {
    return FUNCTIONS.containsKey(key(name));
  }

  /** The names injected in this application's sessions (from {@value #NAMES_CONF}). */
  public static String injectedNames() {
    return String.join(",", names(NAMES_CONF));
  }

  static void inject(SparkSessionExtensions extensions) {
    for (String name : names(NAMES_CONF)) {
      ExpressionInfo info =
          new ExpressionInfo(
              PythonFunctions.class.getName(),
              null,
              name,
              name + "(...) - a pixels-sql function (see docs/sql-functions.md).",
              "",
              "",
              "",
              "",
              "",
              "",
              "python_udf");
      extensions.injectFunction(
          new Tuple3<>(FunctionIdentifier.apply(name), info, new Builder(name)));
    }
    List<String> relations = names(RELATIONS_CONF);
    if (!relations.isEmpty()) {
      extensions.injectResolutionRule(new RelationRuleFactory());
    }
  }

  private static List<String> names(String conf) {
    SparkConf settings = SparkContext.getOrCreate().getConf();
    String value = settings.get(conf, "").trim();
    if (value.isEmpty()) {
      return List.of();
    }
    return java.util.Arrays.stream(value.split(","))
        .map(String::trim)
        .filter(name -> !name.isEmpty())
        .toList();
  }

  private static String key(String name) {
    return name.toLowerCase(Locale.ROOT);
  }

  /** Builds one call of an injected function from the UDF registered at that moment. */
  static final class Builder extends AbstractFunction1<Seq<Expression>, Expression>
      implements Serializable {
    private static final long serialVersionUID = 1L;
    private final String name;

    Builder(String name) {
      this.name = name;
    }

    @Override
    public Expression apply(Seq<Expression> arguments) {
      UserDefinedPythonFunction function = FUNCTIONS.get(key(name));
      if (function == null) {
        throw new IllegalStateException(
            name
                + " is not available in this Spark application: its driver must call"
                + " pixels_sql.register(spark) (pixels-sql serve and pixels_sql.session() do),"
                + " or leave "
                + NAMES_CONF
                + " unset so that sessions can register temporary functions");
      }
      // A client's call reads (or writes) its paths only inside the server's allowed roots.
      return function.builder(ClientGuard.guardArguments(name, arguments));
    }
  }

  static final class RelationRuleFactory extends AbstractFunction1<SparkSession, Rule<LogicalPlan>>
      implements Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public Rule<LogicalPlan> apply(SparkSession session) {
      return new RelationRule();
    }
  }

  /** Resolves a registered relation name that nothing else resolved (no table, no view). */
  static final class RelationRule extends Rule<LogicalPlan> {
    @Override
    public LogicalPlan apply(LogicalPlan plan) {
      if (RELATIONS.isEmpty()) {
        return plan;
      }
      return plan.resolveOperatorsUp(new Replace());
    }
  }

  static final class Replace extends AbstractPartialFunction<LogicalPlan, LogicalPlan>
      implements Serializable {
    private static final long serialVersionUID = 1L;

    private static LocalRelation relationOf(LogicalPlan plan) {
      if (!(plan instanceof UnresolvedRelation)) {
        return null;
      }
      List<String> parts =
          CollectionConverters.asJava(((UnresolvedRelation) plan).multipartIdentifier());
      return parts.size() == 1 ? RELATIONS.get(key(parts.get(0))) : null;
    }

    @Override
    public boolean isDefinedAt(LogicalPlan plan) {
      return relationOf(plan) != null;
    }

    @Override
    public <A1 extends LogicalPlan, B1> B1 applyOrElse(A1 plan, scala.Function1<A1, B1> fallback) {
      LocalRelation relation = relationOf(plan);
      if (relation == null) {
        return fallback.apply(plan);
      }
      String name = CollectionConverters.asJava(((UnresolvedRelation) plan).multipartIdentifier()).get(0);
      @SuppressWarnings("unchecked")
      B1 resolved = (B1) org.apache.spark.sql.catalyst.plans.logical.SubqueryAlias$.MODULE$.apply(name, relation.newInstance());
      return resolved;
    }
  }
}
